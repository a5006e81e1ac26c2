{{/*
The per-service resources, written once: templates/<service>/*.yaml call these with
(dict "root" $ "name" "<service>"). The five services differ only in values (ports, resources,
autoscaling), in scoring's gRPC port, and in who mounts the model registry.
*/}}

{{- define "recmesh.deployment" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values $name -}}
{{- if $svc.enabled }}
{{- $onVolume := include "recmesh.registryOnVolume" $root -}}
{{- $mountsRegistry := and $onVolume (has $name (list "scoring" "personalization" "training")) -}}
{{- $mountsLake := and (eq $name "training") (include "recmesh.lakeOnVolume" $root) -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "recmesh.componentName" . }}
  labels:
    {{- include "recmesh.labels" . | nindent 4 }}
spec:
  {{- if not (or $svc.autoscaling.enabled (include "recmesh.kedaEnabled" .)) }}
  replicas: {{ $svc.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "recmesh.selectorLabels" . | nindent 6 }}
  {{- if and (eq $name "training") (or $mountsLake (and $mountsRegistry (has "ReadWriteOnce" $root.Values.registry.persistence.accessModes))) }}
  # A ReadWriteOnce volume cannot be attached by the old and the new pod at once.
  strategy:
    type: Recreate
  {{- else }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  {{- end }}
  template:
    metadata:
      labels:
        {{- include "recmesh.labels" . | nindent 8 }}
      annotations:
        # Roll the pods when settings or credentials change.
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- if not $root.Values.existingSecret }}
        # From the values, not the rendered Secret: a generated API key differs on every render.
        checksum/secret: {{ list $root.Values.auth $root.Values.kafka.saslUsername $root.Values.kafka.saslPassword $root.Values.redis.password | toJson | sha256sum }}
        {{- end }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "recmesh.serviceAccountName" $root }}
      # The services never call the Kubernetes API.
      automountServiceAccountToken: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
      containers:
        - name: {{ $name }}
          image: {{ include "recmesh.image" . | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          ports:
            - name: http
              containerPort: {{ $svc.port }}
              protocol: TCP
            {{- if eq $name "scoring" }}
            - name: grpc
              containerPort: {{ $svc.grpcPort }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "recmesh.configMapName" $root }}
            - secretRef:
                name: {{ include "recmesh.secretName" $root }}
          env:
            - name: RECMESH_SERVICE_NAME
              value: {{ $name | quote }}
            - name: RECMESH_HTTP__PORT
              value: {{ $svc.port | quote }}
            {{- if eq $name "scoring" }}
            - name: RECMESH_SCORING__GRPC_PORT
              value: {{ $svc.grpcPort | quote }}
            {{- end }}
            {{- if eq $name "training" }}
            - name: RECMESH_TRAINING__LAKE_URI
              value: {{ $root.Values.lake.uri | quote }}
            {{- end }}
            {{- range $k, $v := $svc.env }}
            - name: {{ $k }}
              value: {{ $v | quote }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 5
            failureThreshold: 36
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 3
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $mountsRegistry }}
            - name: registry
              mountPath: {{ $root.Values.registry.uri }}
              readOnly: {{ ne $name "training" }}
            {{- end }}
            {{- if $mountsLake }}
            - name: lake
              mountPath: {{ $root.Values.lake.uri }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $root.Values.tmpSizeLimit }}
        {{- if $mountsRegistry }}
        - name: registry
          persistentVolumeClaim:
            claimName: {{ include "recmesh.registryClaimName" $root }}
        {{- end }}
        {{- if $mountsLake }}
        - name: lake
          persistentVolumeClaim:
            claimName: {{ include "recmesh.lakeClaimName" $root }}
        {{- end }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- range . }}
        - {{- toYaml (omit . "labelSelector") | nindent 10 }}
          labelSelector:
            {{- if .labelSelector }}
            {{- toYaml .labelSelector | nindent 12 }}
            {{- else }}
            matchLabels:
              {{- include "recmesh.selectorLabels" $ | nindent 14 }}
            {{- end }}
        {{- end }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "recmesh.service" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values $name -}}
{{- if $svc.enabled }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "recmesh.componentName" . }}
  labels:
    {{- include "recmesh.labels" . | nindent 4 }}
  {{- with $svc.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $svc.service.type }}
  selector:
    {{- include "recmesh.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $svc.port }}
      targetPort: http
      protocol: TCP
    {{- if eq $name "scoring" }}
    - name: grpc
      port: {{ $svc.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- end }}
{{- end }}
{{- end }}

{{- define "recmesh.hpa" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values $name -}}
{{- if and $svc.enabled $svc.autoscaling.enabled (not (include "recmesh.kedaEnabled" .)) }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "recmesh.componentName" . }}
  labels:
    {{- include "recmesh.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "recmesh.componentName" . }}
  minReplicas: {{ $svc.autoscaling.minReplicas }}
  maxReplicas: {{ $svc.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetCPUUtilizationPercentage }}
    {{- if $svc.autoscaling.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $svc.autoscaling.targetMemoryUtilizationPercentage }}
    {{- end }}
  behavior:
    # Scale up at once on load, down slowly: consumer rebalances and cold caches cost more than idle pods.
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
        - type: Percent
          value: 100
          periodSeconds: 30
    scaleDown:
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
{{- end }}
{{- end }}

{{- define "recmesh.pdb" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values $name -}}
{{- if and $svc.enabled $svc.pdb.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "recmesh.componentName" . }}
  labels:
    {{- include "recmesh.labels" . | nindent 4 }}
spec:
  {{- if hasKey $svc.pdb "minAvailable" }}
  minAvailable: {{ $svc.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $svc.pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "recmesh.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "recmesh.scaledobject" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values $name -}}
{{- if and $svc.enabled (include "recmesh.kedaEnabled" .) }}
{{- $sasl := include "recmesh.kedaSasl" $root -}}
{{- $tls := include "recmesh.kedaTls" $root -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ include "recmesh.componentName" . }}
  labels:
    {{- include "recmesh.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    name: {{ include "recmesh.componentName" . }}
  minReplicaCount: {{ $svc.autoscaling.minReplicas }}
  maxReplicaCount: {{ $svc.autoscaling.maxReplicas }}
  pollingInterval: {{ $svc.keda.pollingInterval }}
  cooldownPeriod: {{ $svc.keda.cooldownPeriod }}
  triggers:
    # Lag summed over every topic the group consumes; one replica per lagThreshold messages behind.
    - type: kafka
      metadata:
        bootstrapServers: {{ include "recmesh.kafkaBootstrap" $root | quote }}
        consumerGroup: {{ include "recmesh.consumerGroup" . | quote }}
        lagThreshold: {{ $svc.keda.lagThreshold | quote }}
        activationLagThreshold: {{ $svc.keda.activationLagThreshold | quote }}
        offsetResetPolicy: earliest
        # More replicas than partitions would idle.
        allowIdleConsumers: "false"
        {{- if $sasl }}
        sasl: {{ $sasl | quote }}
        {{- end }}
        {{- if $tls }}
        tls: {{ $tls | quote }}
        {{- end }}
      {{- if $sasl }}
      authenticationRef:
        name: {{ include "recmesh.fullname" $root }}-kafka
      {{- end }}
    - type: cpu
      metricType: Utilization
      metadata:
        value: {{ $svc.autoscaling.targetCPUUtilizationPercentage | quote }}
{{- end }}
{{- end }}
