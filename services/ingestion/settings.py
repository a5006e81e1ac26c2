"""Settings of the ingestion service: the shared sections plus an ``ingestion`` section.

Built once in ``__main__`` (``IngestionSettings()``, env ``RECMESH_INGESTION__...``) and
passed down to the app, the handlers and the importers.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from recmesh.core.settings import HttpSettings, ServiceSettings


class EventTypeRule(BaseModel):
    """Rewrite an event's type when its value is in a range (e.g. rating >= 4 → like)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when_type: str = Field("rating", description="Event type the rule applies to.")
    min_value: float | None = Field(None, description="Inclusive lower bound of value (None: no bound).")
    max_value: float | None = Field(None, description="Exclusive upper bound of value (None: no bound).")
    to: str = Field(..., description="Event type written instead.")

    @classmethod
    def parse(cls, text: str) -> EventTypeRule:
        """``"rating>=4:like"``, ``"rating<2:dislike"`` or ``"buy:purchase"`` (plain rename)."""
        cond, _, to = text.rpartition(":")
        if not cond or not to:
            raise ValueError(f"rule {text!r}: expected TYPE[>=N|<N]:NEW_TYPE")
        for op in (">=", "<"):
            if op in cond:
                t, _, v = cond.partition(op)
                bound = float(v)
                return cls(when_type=t.strip(), to=to.strip(),
                           **({"min_value": bound} if op == ">=" else {"max_value": bound}))  # fmt: skip
        return cls(when_type=cond.strip(), to=to.strip())

    def applies(self, event_type: str, value: float | None) -> bool:
        if event_type != self.when_type:
            return False
        if self.min_value is None and self.max_value is None:
            return True
        if value is None:
            return False
        if self.min_value is not None and value < self.min_value:
            return False
        return not (self.max_value is not None and value >= self.max_value)


class IngestionSection(BaseModel):
    """The front door's limits, normalisation and cleaning rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_batch: int = Field(10_000, ge=1, description="Most events (or catalog entries) in one request.")
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Request body limit (413 beyond).")
    max_future_skew_ms: int = Field(
        5 * 60_000, ge=0, description="Events timestamped further than this in the future are rejected."
    )
    max_id_length: int = Field(256, ge=1, description="Longest user, item, event or session id accepted.")
    event_type_aliases: dict[str, str] = Field(
        default_factory=lambda: {"buy": "purchase", "order": "purchase", "cart": "add_to_cart",
                                 "rate": "rating", "impression": "view", "play": "view"},
        description="Client event type → canonical type, applied before validation.",
    )  # fmt: skip
    event_type_rules: list[EventTypeRule] = Field(
        default_factory=list,
        description="Value-based type rewrites (e.g. rating >= 4 → like); none by default so that "
        "ratings arrive losslessly and training decides how to weigh them.",
    )
    dedupe: bool = Field(True, description="Accept a client event_id once (SET NX in Redis with a TTL).")
    dedupe_ttl_s: int = Field(7 * 86400, ge=1, description="How long an event_id is remembered.")
    dedupe_mode: str = Field(
        "script", pattern="^(script|pipeline)$",
        description="script: one Lua call per batch (fast); pipeline: one SET per event (Redis Cluster).",
    )  # fmt: skip
    max_queue_depth: int | None = Field(
        None, ge=1, description="Producer queue bound for backpressure (default: the Kafka queue bound)."
    )
    retry_after_s: float = Field(1.0, gt=0, description="Retry-After of a 503 under backpressure.")
    ack_timeout_s: float = Field(30.0, gt=0, description="Longest wait for the broker to acknowledge a batch.")
    value_min: float | None = Field(None, description="Importers: values below are clamped or dropped.")
    value_max: float | None = Field(None, description="Importers: values above are clamped or dropped.")
    out_of_range: str = Field("drop", pattern="^(drop|clamp)$", description="drop or clamp out-of-range values.")
    bot_max_events_per_minute: int | None = Field(
        None, ge=1, description="Importers: drop a user's events beyond N in one minute (None: off)."
    )
    import_chunk_rows: int = Field(50_000, ge=1, description="Rows per chunk read by the batch importers.")


class IngestionSettings(ServiceSettings):
    """ServiceSettings + the ``ingestion`` section; HTTP on 8001 by default."""

    service_name: str = "ingestion"
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=8001))  # type: ignore[call-arg]
    ingestion: IngestionSection = Field(default_factory=IngestionSection)
