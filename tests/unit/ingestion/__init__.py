"""Unit tests of the ingestion service (no broker, no Redis)."""
