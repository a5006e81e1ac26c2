output "scoring_url" {
  description = "In-cluster URL of the scoring API."
  value       = module.recmesh.scoring_url
}

output "ingestion_url" {
  description = "In-cluster URL of the ingestion API."
  value       = module.recmesh.ingestion_url
}
