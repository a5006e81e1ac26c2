"""The ingestion service (see README, Architecture)."""
