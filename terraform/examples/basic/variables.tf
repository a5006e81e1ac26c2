variable "kubeconfig" {
  description = "Path of the kubeconfig file."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "kubeconfig context (null: the current one)."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "Recmesh image tag."
  type        = string
  default     = ""
}

variable "kafka_bootstrap_servers" {
  description = "MSK SASL/SCRAM bootstrap brokers, e.g. b-1.recmesh.abc123.c2.kafka.eu-west-1.amazonaws.com:9096."
  type        = string
}

variable "kafka_sasl_username" {
  description = "SCRAM user name."
  type        = string
  sensitive   = true
}

variable "kafka_sasl_password" {
  description = "SCRAM password."
  type        = string
  sensitive   = true
}

variable "redis_url" {
  description = "ElastiCache primary endpoint, e.g. rediss://master.recmesh.abc123.euw1.cache.amazonaws.com:6379/0."
  type        = string
}

variable "redis_password" {
  description = "ElastiCache AUTH token."
  type        = string
  sensitive   = true
}

variable "api_keys" {
  description = "API keys: {key = tenant or \"*\"}."
  type        = map(string)
  sensitive   = true
}

variable "registry_uri" {
  description = "Model registry on S3."
  type        = string
  default     = "s3://recmesh-models/registry"
}

variable "lake_uri" {
  description = "Training's Parquet lake on S3."
  type        = string
  default     = "s3://recmesh-lake/interactions"
}

variable "registry_role_arn" {
  description = "IAM role (IRSA) with access to the registry and lake buckets; empty: none."
  type        = string
  default     = ""
}
