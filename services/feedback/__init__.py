"""The feedback service (see README, Architecture)."""
