{{/*
Names, labels and shared values of the Recmesh chart. Every resource name and label comes from here.
*/}}

{{/* Chart name, overridable. */}}
{{- define "recmesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-recmesh, or the release name when it already contains the chart name. */}}
{{- define "recmesh.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart label value: name-version. */}}
{{- define "recmesh.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of one component's resources: <fullname>-<component>. Call with (dict "root" $ "name" "scoring"). */}}
{{- define "recmesh.componentName" -}}
{{- printf "%s-%s" (include "recmesh.fullname" .root | trunc 47 | trimSuffix "-") .name }}
{{- end }}

{{/* Labels on every resource; with (dict "root" $ "name" COMPONENT), or the root context for release-wide ones. */}}
{{- define "recmesh.labels" -}}
{{- $root := .root | default . -}}
helm.sh/chart: {{ include "recmesh.chart" $root }}
{{ include "recmesh.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Values.image.tag | default $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: recmesh
{{- end }}

{{/* Selector labels; the component label only when a component is named. */}}
{{- define "recmesh.selectorLabels" -}}
{{- $root := .root | default . -}}
app.kubernetes.io/name: {{ include "recmesh.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
{{- if .name }}
app.kubernetes.io/component: {{ .name }}
{{- end }}
{{- end }}

{{/* Image of one service: <repository>-<service>:<tag or appVersion>. */}}
{{- define "recmesh.image" -}}
{{- $root := .root -}}
{{- printf "%s-%s:%s" $root.Values.image.repository .name ($root.Values.image.tag | default $root.Chart.AppVersion) }}
{{- end }}

{{- define "recmesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recmesh.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret every service reads credentials from: existingSecret or the chart's. */}}
{{- define "recmesh.secretName" -}}
{{- .Values.existingSecret | default (include "recmesh.fullname" .) }}
{{- end }}

{{- define "recmesh.configMapName" -}}
{{- include "recmesh.fullname" . }}
{{- end }}

{{/* Kafka bootstrap servers: the bundled broker's Service, or the external list. */}}
{{- define "recmesh.kafkaBootstrap" -}}
{{- if .Values.kafka.bundled.enabled }}
{{- printf "%s-kafka:9092" (include "recmesh.fullname" .) }}
{{- else }}
{{- required "kafka.bootstrapServers is required" .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{- define "recmesh.redisUrl" -}}
{{- if .Values.redis.bundled.enabled }}
{{- printf "redis://%s-redis:6379/0" (include "recmesh.fullname" .) }}
{{- else }}
{{- required "redis.url is required" .Values.redis.url }}
{{- end }}
{{- end }}

{{/* Whether the registry is a path on a volume the chart mounts (not s3://, gs://...). */}}
{{- define "recmesh.registryOnVolume" -}}
{{- if and .Values.registry.persistence.enabled (not (contains "://" .Values.registry.uri)) }}true{{ end }}
{{- end }}

{{/* Whether the training lake is a path on a volume the chart mounts. */}}
{{- define "recmesh.lakeOnVolume" -}}
{{- if and .Values.lake.persistence.enabled (not (contains "://" .Values.lake.uri)) }}true{{ end }}
{{- end }}

{{- define "recmesh.lakeClaimName" -}}
{{- .Values.lake.persistence.existingClaim | default (printf "%s-lake" (include "recmesh.fullname" .)) }}
{{- end }}

{{- define "recmesh.registryClaimName" -}}
{{- .Values.registry.persistence.existingClaim | default (printf "%s-registry" (include "recmesh.fullname" .)) }}
{{- end }}

{{/* Kafka consumer group of a consumer service (its settings' group_id; topic prefixes do not apply). */}}
{{- define "recmesh.consumerGroup" -}}
{{- $svc := index .root.Values .name -}}
{{- required (printf "%s.keda.consumerGroup is required" .name) $svc.keda.consumerGroup }}
{{- end }}

{{/* KEDA's sasl mode, from keda.sasl or kafka.saslMechanism. */}}
{{- define "recmesh.kedaSasl" -}}
{{- if .Values.keda.sasl }}
{{- .Values.keda.sasl }}
{{- else if .Values.kafka.saslMechanism }}
{{- $m := upper .Values.kafka.saslMechanism }}
{{- if eq $m "PLAIN" }}plaintext{{ else }}{{ $m | lower | replace "-" "_" | replace "scram_sha_" "scram_sha" }}{{ end }}
{{- end }}
{{- end }}

{{- define "recmesh.kedaTls" -}}
{{- if .Values.keda.tls }}
{{- .Values.keda.tls }}
{{- else if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}enable{{ end }}
{{- end }}

{{/* True when a consumer service scales with KEDA (then it has no HPA of its own). */}}
{{- define "recmesh.kedaEnabled" -}}
{{- $svc := index .root.Values .name -}}
{{- if and $svc.keda $svc.keda.enabled }}true{{ end }}
{{- end }}

{{/* Whether any enabled service scales with KEDA (for the shared TriggerAuthentication). */}}
{{- define "recmesh.anyKeda" -}}
{{- range $name := list "feedback" "personalization" "training" }}
{{- $svc := index $.Values $name }}
{{- if and $svc.enabled $svc.keda.enabled }}true{{ end }}
{{- end }}
{{- end }}

{{/* The API keys JSON: the given keys, the key kept from a previous install, or a new one. */}}
{{- define "recmesh.apiKeysJson" -}}
{{- if .Values.auth.apiKeys }}
{{- toJson .Values.auth.apiKeys }}
{{- else if .Values.auth.generateApiKey }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "recmesh.fullname" .) }}
{{- if and $existing $existing.data (hasKey $existing.data "RECMESH_AUTH__API_KEYS") }}
{{- index $existing.data "RECMESH_AUTH__API_KEYS" | b64dec }}
{{- else }}
{{- toJson (dict (randAlphaNum 40) "*") }}
{{- end }}
{{- else if eq .Values.env "prod" }}
{{- fail "env=prod needs API keys: set auth.apiKeys, auth.generateApiKey=true or existingSecret" }}
{{- else }}
{{- "{}" }}
{{- end }}
{{- end }}
