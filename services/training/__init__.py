"""The training service (see README, Architecture)."""
