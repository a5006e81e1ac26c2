"""The personalization service (see README, Architecture)."""
