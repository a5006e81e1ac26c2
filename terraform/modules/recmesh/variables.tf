variable "namespace" {
  description = "Kubernetes namespace to deploy Recmesh into."
  type        = string
  default     = "recmesh"
}

variable "create_namespace" {
  description = "Create the namespace (false: it must exist)."
  type        = bool
  default     = true
}

variable "release_name" {
  description = "Helm release name."
  type        = string
  default     = "recmesh"
}

variable "chart" {
  description = "Chart reference: a local path (the repository's charts/recmesh) or an OCI URL such as oci://ghcr.io/recmesh/charts/recmesh."
  type        = string
  default     = "../../../charts/recmesh"
}

variable "chart_version" {
  description = "Chart version, for an OCI or repository chart (null for a local path)."
  type        = string
  default     = null
}

variable "image_repository" {
  description = "Image prefix; each service's image is <prefix>-<service>."
  type        = string
  default     = "ghcr.io/recmesh/recmesh"
}

variable "image_tag" {
  description = "Image tag of every service (empty: the chart's appVersion)."
  type        = string
  default     = ""
}

variable "environment" {
  description = "RECMESH_ENV: dev, test or prod (prod refuses an open API)."
  type        = string
  default     = "prod"

  validation {
    condition     = contains(["dev", "test", "prod"], var.environment)
    error_message = "environment must be dev, test or prod."
  }
}

variable "kafka_bootstrap_servers" {
  description = "Bootstrap servers of the external Kafka, e.g. the MSK or Confluent Cloud SASL/TLS endpoint list."
  type        = string
}

variable "kafka_security_protocol" {
  description = "Kafka security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
  type        = string
  default     = "SASL_SSL"

  validation {
    condition     = contains(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], var.kafka_security_protocol)
    error_message = "kafka_security_protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
  }
}

variable "kafka_sasl_mechanism" {
  description = "SASL mechanism: PLAIN (Confluent Cloud), SCRAM-SHA-512 (MSK) or empty for none."
  type        = string
  default     = "SCRAM-SHA-512"
}

variable "kafka_sasl_username" {
  description = "SASL user name (Confluent Cloud API key, MSK SCRAM user)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "kafka_sasl_password" {
  description = "SASL password (Confluent Cloud API secret, MSK SCRAM password)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "kafka_topic_prefix" {
  description = "Prefix of every topic name, to share one cluster between installs."
  type        = string
  default     = ""
}

variable "redis_url" {
  description = "Redis URL without the password, e.g. rediss://master.recmesh.xxxxxx.cache.amazonaws.com:6379/0 (ElastiCache)."
  type        = string
}

variable "redis_password" {
  description = "Redis AUTH token / password (empty: none)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "api_keys" {
  description = "API keys: {key = tenant or \"*\"}. Required when environment is prod."
  type        = map(string)
  default     = {}
  sensitive   = true
}

variable "registry_uri" {
  description = "Model registry root: s3://bucket/prefix (recommended) or a path on the chart's volume."
  type        = string
  default     = "/data/registry"
}

variable "lake_uri" {
  description = "Training's Parquet lake: s3://bucket/prefix (recommended) or a path on the chart's volume."
  type        = string
  default     = "/data/lake"
}

variable "service_account_annotations" {
  description = "Annotations of the services' ServiceAccount, e.g. eks.amazonaws.com/role-arn for S3 access."
  type        = map(string)
  default     = {}
}

variable "keda_enabled" {
  description = "Scale feedback and personalization on Kafka consumer lag with KEDA (must be installed)."
  type        = bool
  default     = false
}

variable "service_monitor_enabled" {
  description = "Create a Prometheus Operator ServiceMonitor."
  type        = bool
  default     = false
}

variable "network_policy_enabled" {
  description = "Create NetworkPolicies for the services."
  type        = bool
  default     = false
}

variable "extra_values" {
  description = "More chart values as YAML documents, merged after the module's own."
  type        = list(string)
  default     = []
}
