"""Settings of the scoring service: the shared sections plus a ``scoring`` section.

Built once in ``__main__`` (``ScoringSettings()``, env ``RECMESH_SCORING__...``; nested values
such as experiments are JSON, e.g. ``RECMESH_SCORING__EXPERIMENT='{"variants": {...}}'``) and
passed down to the app, the engine and the gRPC server.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recmesh.core.settings import HttpSettings, ServiceSettings

SOURCES: tuple[str, ...] = ("model", "covisit", "trending", "popular", "content")
WINDOWS: tuple[str, ...] = ("1h", "1d", "7d")


class VariantConfig(BaseModel):
    """One arm of the experiment: which model serves it, how sources blend, which rules apply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    traffic: float = Field(1.0, ge=0, description="Relative share of users assigned to this variant.")
    model: str | None = Field(None, description="Model name (None: the first of scoring.models).")
    version: str | None = Field(None, description="Pinned model version (None: the champion, hot-swapped on publish).")
    blend: dict[str, float] = Field(
        default_factory=lambda: {"model": 1.0, "covisit": 0.6, "trending": 0.3, "popular": 0.0, "content": 0.3},
        description="Weight of each candidate source in the weighted reciprocal-rank fusion; popular (weight 0) "
        "still fills lists the other sources cannot (cold start, no model). content: catalog items the served "
        "model does not know yet (new items) in the categories of the user's recent items; weight 0 turns it off.",
    )
    content_slots: int = Field(
        1,
        ge=0,
        description="Positions at the end of the list kept for content (new-item) candidates when the blend "
        "ranks none into the top k: new items share no rank with the model, so RRF alone places them below "
        "its whole candidate list. At most one slot per 5 positions (none for k < 5); 0 turns it off.",
    )
    mmr_lambda: float = Field(
        1.0, ge=0, le=1, description="MMR trade-off: 1 = pure relevance (no re-ranking), lower = more diverse."
    )
    exclude_seen: bool = Field(True, description="Default of exclude_seen when the request does not say.")
    boost_categories: dict[str, float] = Field(
        default_factory=dict, description="Score multiplier per category for this variant."
    )
    trending_window: str | None = Field(None, description="Trending window (None: scoring.trending_window).")

    @model_validator(mode="after")
    def _check(self) -> VariantConfig:
        unknown = set(self.blend) - set(SOURCES)
        if unknown:
            raise ValueError(f"unknown blend sources {sorted(unknown)} (known: {', '.join(SOURCES)})")
        if any(w < 0 for w in self.blend.values()):
            raise ValueError("blend weights must be >= 0")
        if self.trending_window is not None and self.trending_window not in WINDOWS:
            raise ValueError(f"trending_window must be one of {WINDOWS}")
        return self


class ExperimentConfig(BaseModel):
    """Sticky user → variant assignment by a salted hash of the user id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("default", description="Experiment name (logged with every impression's variant).")
    salt: str = Field("recmesh", description="Hash salt; change it to reshuffle users between variants.")
    variants: dict[str, VariantConfig] = Field(
        default_factory=lambda: {"control": VariantConfig()}, description="Variant name → its config."
    )

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if not self.variants:
            raise ValueError("an experiment needs at least one variant")
        if sum(v.traffic for v in self.variants.values()) <= 0:
            raise ValueError("variant traffic shares sum to 0")
        return self


class ScoringSection(BaseModel):
    """Retrieval, limits, experiments and fallbacks of the scoring service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[str] = Field(default_factory=lambda: ["default"], description="Model names to serve.")
    grpc_enabled: bool = Field(True, description="Serve gRPC next to HTTP (same process and event loop).")
    grpc_host: str | None = Field(None, description="gRPC bind address (None: the HTTP host).")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    hnsw_threshold: int = Field(
        20_000, ge=0, description="Catalogs with at least this many items use HNSW; smaller ones exact numpy."
    )
    hnsw_m: int = Field(16, ge=2, description="HNSW graph degree (M).")
    hnsw_ef_construction: int = Field(100, ge=8, description="HNSW ef at build time.")
    hnsw_ef: int = Field(96, ge=8, description="HNSW ef at query time (recall vs latency).")
    hnsw_build_threads: int = Field(
        1, ge=1, description="Threads for index builds during hot reload (the first load uses every core)."
    )
    default_k: int = Field(10, ge=1, description="List length when the request names none.")
    max_k: int = Field(100, ge=1, description="Largest k accepted (422 beyond).")
    max_list_len: int = Field(500, ge=1, description="Longest include/exclude/boost list (413 beyond).")
    max_batch_users: int = Field(100, ge=1, description="Most users in one batch request (413 beyond).")
    max_id_length: int = Field(256, ge=1, description="Longest user/item id accepted (422 beyond).")
    candidates_per_source: int = Field(
        30, ge=1, description="Candidates each source contributes before blending (at least 3·k)."
    )
    mmr_pool: int = Field(3, ge=1, description="MMR re-ranks the top k·mmr_pool blended candidates.")
    recent_items: int = Field(20, ge=1, description="Recent items read per user (history encoder, co-visitation).")
    covisit_items: int = Field(5, ge=0, description="Recent items whose co-visitation neighbours are read.")
    covisit_per_item: int = Field(20, ge=1, description="Neighbours read per recent item.")
    max_seen: int = Field(1000, ge=0, description="Most seen items read for exclusion.")
    trending_window: str = Field("1d", description="Default trending window (1h, 1d, 7d).")
    popular_refresh_s: float = Field(
        5.0, gt=0, description="Refresh of the in-memory popular list (the Redis-down and no-model fallback)."
    )
    redis_timeout_s: float = Field(0.25, gt=0, description="Socket timeout of request-path Redis calls.")
    redis_retry_s: float = Field(
        1.0, gt=0, description="After a Redis failure, serve degraded this long before trying Redis again."
    )
    impressions: bool = Field(True, description="Publish every response to recommendations.served.v1.")
    impression_queue_max: int = Field(
        10_000, ge=1, description="Impressions waiting for the producer thread; beyond, dropped and counted."
    )
    consume_models: bool = Field(True, description="Hot-reload on models.published.v1.")
    consume_catalog: bool = Field(True, description="Follow catalog.items.v1 (availability, categories).")
    registry_poll_s: float = Field(
        60.0, ge=0, description="Also re-read the registry's champions this often (0: never); a safety net."
    )
    experiment: ExperimentConfig = Field(default_factory=ExperimentConfig)  # type: ignore[arg-type]
    hello_route: bool = Field(
        False, description="Serve GET /_hello (the benchmark's hello-world baseline on the same stack)."
    )

    @model_validator(mode="after")
    def _check(self) -> ScoringSection:
        if not self.models:
            raise ValueError("scoring.models needs at least one model name")
        if self.trending_window not in WINDOWS:
            raise ValueError(f"trending_window must be one of {WINDOWS}")
        if self.default_k > self.max_k:
            raise ValueError("default_k must be <= max_k")
        for name, v in self.experiment.variants.items():
            if v.model is not None and v.model not in self.models:
                raise ValueError(f"variant {name!r} uses model {v.model!r}, not in scoring.models")
        return self


class ScoringSettings(ServiceSettings):
    """Scoring settings: HTTP on 8000 and gRPC on 50051 by default."""

    service_name: str = "scoring"
    http: HttpSettings = Field(default_factory=lambda: HttpSettings(port=8000))  # type: ignore[call-arg]
    scoring: ScoringSection = Field(default_factory=ScoringSection)  # type: ignore[arg-type]
