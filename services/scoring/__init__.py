"""The scoring service (see README, Architecture)."""
