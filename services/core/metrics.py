"""Prometheus metrics shared by every service (one process-wide registry).

Services define their own metrics next to their code with these helpers' naming; the bus
and web modules define the common ones here so that every service exports them alike.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "REGISTRY", "Counter", "Gauge", "Histogram", "render"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

PRODUCED = Counter("recmesh_produced_total", "Messages delivered to Kafka.", ["topic"])
PRODUCE_FAILED = Counter("recmesh_produce_failed_total", "Messages Kafka failed to deliver.", ["topic"])
PRODUCER_QUEUE = Gauge("recmesh_producer_queue_depth", "Messages waiting in the local producer queue.")
BACKPRESSURE = Counter("recmesh_producer_backpressure_total", "Sends refused because the queue was full.")

CONSUMED = Counter("recmesh_consumed_total", "Messages consumed.", ["topic", "group"])
PROCESSED = Counter("recmesh_processed_total", "Messages processed successfully.", ["topic", "group"])
FAILED = Counter("recmesh_failed_total", "Handler failures (before retry or DLQ).", ["topic", "group", "kind"])
DEAD_LETTERED = Counter("recmesh_dead_lettered_total", "Messages sent to the DLQ.", ["topic", "group"])
PROCESSING_SECONDS = Histogram(
    "recmesh_processing_seconds", "Handler time per batch.", ["topic", "group"], buckets=LATENCY_BUCKETS
)
CONSUMER_LAG = Gauge("recmesh_consumer_lag", "Messages behind the log end.", ["topic", "partition", "group"])

HTTP_LATENCY = Histogram(
    "recmesh_http_request_seconds",
    "HTTP request latency.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)


def render() -> tuple[bytes, str]:
    """Exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
