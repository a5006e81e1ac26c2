# Recmesh on an existing Kubernetes cluster against a managed Kafka (e.g. Amazon MSK with SASL/SCRAM)
# and a managed Redis (e.g. ElastiCache with AUTH). `terraform init && terraform apply` with the
# variables below set in a terraform.tfvars kept out of git (or TF_VAR_* environment variables).

provider "kubernetes" {
  config_path    = var.kubeconfig
  config_context = var.kube_context
}

provider "helm" {
  kubernetes = {
    config_path    = var.kubeconfig
    config_context = var.kube_context
  }
}

module "recmesh" {
  source = "../../modules/recmesh"

  namespace    = "recmesh"
  release_name = "recmesh"
  chart        = "${path.module}/../../../charts/recmesh"
  image_tag    = var.image_tag

  kafka_bootstrap_servers = var.kafka_bootstrap_servers
  kafka_security_protocol = "SASL_SSL"
  kafka_sasl_mechanism    = "SCRAM-SHA-512"
  kafka_sasl_username     = var.kafka_sasl_username
  kafka_sasl_password     = var.kafka_sasl_password

  redis_url      = var.redis_url
  redis_password = var.redis_password

  api_keys     = var.api_keys
  registry_uri = var.registry_uri
  lake_uri     = var.lake_uri

  service_account_annotations = var.registry_role_arn == "" ? {} : {
    "eks.amazonaws.com/role-arn" = var.registry_role_arn
  }
}
