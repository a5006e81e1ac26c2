"""Settings of the feedback service: ServiceSettings + the ``feedback`` section.

HTTP (health, readiness, metrics only) listens on 8002 by default.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from recmesh.core.settings import HttpSettings, ServiceSettings

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "purchase": 4.0, "add_to_cart": 3.0, "like": 3.0, "share": 2.5, "click": 1.0, "view": 0.5,
    "rating": 1.0, "skip": 0.0, "dislike": 0.0,
}  # fmt: skip


class FeedbackSection(BaseModel):
    """Counters, windows, caps and attribution rules of the feedback service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group_id: str = Field("recmesh-feedback", description="Consumer group (the seen fast lane adds '-seen').")
    seen_fast_lane: bool = Field(
        True, description="Update seen items in a consumer group of their own (fresh exclude_seen under load)."
    )
    seen_lane_process: bool = Field(
        True,
        description=(
            "Run the seen fast lane in a child process, so the counters' batches and garbage "
            "collections never hold it up (one GIL per process); False: a thread of this process."
        ),
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Popularity/trending weight per event type; <= 0 does not count.",
    )
    default_weight: float = Field(1.0, description="Weight of event types missing from event_weights.")
    popularity_half_life_s: float = Field(7 * 86400.0, gt=0, description="Half-life of item popularity.")
    trending_windows: dict[str, float] = Field(
        default_factory=lambda: {"1h": 3600.0, "1d": 86400.0, "7d": 7 * 86400.0},
        description="Trending window name → half-life in seconds (one sorted set each, also per category).",
    )
    counters_max_items: int = Field(
        10_000, ge=1, description="Items kept per popularity/trending sorted set (the weakest are trimmed)."
    )
    covisit_window_s: float = Field(
        1800.0, gt=0, description="Two items interacted with by one user within this time co-occur."
    )
    covisit_max_neighbors_per_event: int = Field(
        20, ge=1, description="Most recent items paired with each new interaction (bounds the work)."
    )
    covisit_keep: int = Field(100, ge=1, description="Neighbours kept per item (top by weight).")
    click_types: list[str] = Field(
        default_factory=lambda: ["click", "add_to_cart", "purchase", "like", "share", "rating"],
        description="Event types that count as a click on an impression (view is not: it aliases impression).",
    )
    conversion_types: list[str] = Field(
        default_factory=lambda: ["purchase"], description="Event types that count as a conversion."
    )
    attribution_window_s: int | None = Field(
        None, ge=1, description="How long an impression can be joined (default: redis.impression_ttl_s)."
    )
    emit_labels: bool = Field(True, description="Emit feedback.labeled.v1 for attributed interactions.")
    timeout_negatives: bool = Field(
        True,
        description="When an impression's attribution window closes without any click, emit every item "
        "it showed as a negative label (label 0), once (clicked impressions keep their skip-above negatives).",
    )
    negatives_delay_s: float = Field(
        10.0, ge=0,
        description="Wait this long after a window closes before sweeping it, so an engagement being "
        "attributed right at the deadline finishes first (no item labeled both 1 and 0).",
    )  # fmt: skip
    sweep_interval_s: float = Field(1.0, gt=0, description="How often closed impressions are swept for negatives.")
    sweep_batch: int = Field(500, ge=1, description="Impressions claimed per sweep round.")
    group_instance_id: str | None = Field(
        None,
        description="Static group membership (group.instance.id, e.g. the pod name): a restarted replica "
        "takes its partitions back at once instead of after the session timeout.",
    )
    poll_timeout_s: float = Field(
        0.005, gt=0, description="Consumer poll timeout (small = fresh; overrides kafka.consumer_poll_timeout_s)."
    )
    fetch_wait_max_ms: int = Field(5, ge=0, description="librdkafka fetch.wait.max.ms for the consumer.")
    item_meta_cache_s: float = Field(300.0, ge=0, description="How long item categories are cached in process.")


class FeedbackSettings(ServiceSettings):
    """ServiceSettings + the ``feedback`` section; HTTP on 8002 by default."""

    service_name: str = "feedback"
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=8002))  # type: ignore[call-arg]
    feedback: FeedbackSection = Field(default_factory=FeedbackSection)
