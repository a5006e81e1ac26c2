"""Integration tests of the ingestion service (real Kafka and Redis)."""
