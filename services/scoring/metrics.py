"""Prometheus metrics of the scoring service (``recmesh_scoring_*``)."""

from __future__ import annotations

from recmesh.core.metrics import LATENCY_BUCKETS, Counter, Gauge, Histogram

REQUEST_SECONDS = Histogram(
    "recmesh_scoring_request_seconds",
    "Time to compute a response (without HTTP/gRPC framing), per endpoint and variant.",
    ["endpoint", "variant"],
    buckets=LATENCY_BUCKETS,
)
CANDIDATES = Counter("recmesh_scoring_candidates_total", "Candidates contributed per source.", ["source"])
SERVED_ITEMS = Counter("recmesh_scoring_served_items_total", "Items returned per winning source.", ["source"])
FALLBACKS = Counter(
    "recmesh_scoring_fallbacks_total",
    "Requests served by a fallback (user_factors, history, cold_start, redis_down, no_model, content).",
    ["kind"],
)
REDIS_ERRORS = Counter("recmesh_scoring_redis_errors_total", "Request-path Redis failures.")
MODEL_VERSION = Gauge(
    "recmesh_scoring_model_version_info", "1 for the model version each model name serves.", ["model", "version"]
)
MODEL_LOADED_AT = Gauge("recmesh_scoring_model_loaded_timestamp_seconds", "When the served version loaded.", ["model"])
MODEL_LOAD_SECONDS = Histogram(
    "recmesh_scoring_model_load_seconds",
    "Artifact load + index build time.",
    ["model"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
MODEL_SWAPS = Counter("recmesh_scoring_model_swaps_total", "Atomic model swaps.", ["model"])
MODEL_LOAD_FAILED = Counter("recmesh_scoring_model_load_failed_total", "Model versions that failed to load.", ["model"])
IMPRESSIONS = Counter("recmesh_scoring_impressions_total", "Impressions handed to the producer.", ["result"])
