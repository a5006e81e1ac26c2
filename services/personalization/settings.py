"""Settings of the personalization service: ServiceSettings + the ``personalization`` section.

HTTP (health, readiness, metrics only) listens on 8003 by default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from recmesh.core.settings import HttpSettings, ServiceSettings

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "purchase": 4.0, "add_to_cart": 3.0, "like": 3.0, "share": 2.5, "click": 1.0, "view": 0.5,
    "rating": 1.0, "skip": -0.5, "dislike": -2.0,
}  # fmt: skip


class PersonalizationSection(BaseModel):
    """How interactions become real-time user state (recent items, affinities, user vectors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: str = Field("recmesh-personalization", description="Consumer group of the interactions runner.")
    models: list[str] = Field(
        default_factory=list,
        description="Model names to keep user vectors for (empty: every model in the registry / published).",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Confidence per event type (mirrors training's WeightConfig defaults; rating = binary).",
    )
    default_weight: float = Field(1.0, description="Weight of event types missing from event_weights.")
    affinity_half_life_s: float = Field(
        7 * 86400.0, gt=0, description="Half-life of category affinities (log-space decayed weights)."
    )
    affinity_max_categories: int = Field(100, ge=1, description="Categories kept per user (weakest dropped).")
    fold_in_prior: bool = Field(
        True,
        description="For users the model knows, fold new events on top of the trained vector (prior "
        "precision YᵀY+λI) instead of re-solving from the recent list alone.",
    )
    bulk_load_chunk: int = Field(2000, ge=1, description="User vectors per pipeline when bulk-loading.")
    backfill_on_publish: bool = Field(
        True,
        description="After a new version goes live, compute vectors (SET NX) for users with recent items "
        "the model does not know, scanning the recent-items keys in the background.",
    )
    group_instance_id: str | None = Field(
        None,
        description="Static group membership (group.instance.id, e.g. the pod name): a restarted replica "
        "takes its partitions back at once instead of after the session timeout.",
    )
    poll_timeout_s: float = Field(
        0.005, gt=0, description="Consumer poll timeout (small = fresh; overrides kafka.consumer_poll_timeout_s)."
    )
    fetch_wait_max_ms: int = Field(5, ge=0, description="librdkafka fetch.wait.max.ms for the consumers.")
    item_meta_cache_s: float = Field(300.0, ge=0, description="How long item categories read from Redis are cached.")


class PersonalizationSettings(ServiceSettings):
    """ServiceSettings + the ``personalization`` section; HTTP on 8003 by default."""

    service_name: str = "personalization"
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=8003))  # type: ignore[call-arg]
    personalization: PersonalizationSection = Field(default_factory=PersonalizationSection)
