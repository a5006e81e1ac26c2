output "namespace" {
  description = "Namespace Recmesh runs in."
  value       = var.namespace
}

output "release_name" {
  description = "Helm release name."
  value       = helm_release.recmesh.name
}

output "scoring_url" {
  description = "In-cluster URL of the scoring API."
  value       = "http://${local.fullname}-scoring.${var.namespace}.svc:8000"
}

output "ingestion_url" {
  description = "In-cluster URL of the ingestion API."
  value       = "http://${local.fullname}-ingestion.${var.namespace}.svc:8001"
}

output "credentials_secret" {
  description = "Name of the Secret holding API keys and Kafka/Redis credentials."
  value       = kubernetes_secret_v1.credentials.metadata[0].name
}
