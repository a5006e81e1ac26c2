"""Wiring of the feedback service: Redis, the labels producer, one consumer runner, HTTP ops app.

The main runner (group ``feedback.group_id``) consumes ``interactions.v1``,
``recommendations.served.v1`` and ``catalog.items.v1``. A second runner (group
``<group_id>-seen``) is the freshness fast lane: it only writes the seen items that
scoring's ``exclude_seen`` reads, so they stay fresh while the counters lag. Interactions and served
recommendations are both keyed by user id with the same partition count, so with the range
assignor one replica owns a user's clicks and impressions. Shutdown (SIGTERM): stop the
runner (finishes its batch and commits), join it, flush the producer, close Redis.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import FastAPI

from recmesh.core.bus import ConsumerRunner, EventProducer, Subscription
from recmesh.core.store import connect
from recmesh.core.topics import CATALOG_ITEMS, INTERACTIONS, RECOMMENDATIONS_SERVED, TopicRegistry
from recmesh.core.web import create_service_app
from recmesh.feedback.handlers import FeedbackHandler
from recmesh.feedback.settings import FeedbackSettings

log = logging.getLogger(__name__)


class FeedbackService:
    """The consumer, its producer and Redis; usable without HTTP (tests, benchmarks)."""

    def __init__(self, settings: FeedbackSettings) -> None:
        self.settings = settings
        s = settings.feedback
        self.topics = TopicRegistry(prefix=settings.kafka.topic_prefix)
        self.redis = connect(settings.redis)
        self.kafka = settings.kafka.model_copy(update={"consumer_poll_timeout_s": s.poll_timeout_s})
        # labels and dead letters share one producer; a short linger keeps the per-batch flush cheap
        self.producer = EventProducer(
            self.kafka, self.topics, client_id="feedback", schema_registry_url=settings.schema_registry_url,
            extra_config={"linger.ms": 1},
        ).start()  # fmt: skip
        self.handler = FeedbackHandler(self.redis, settings.redis, s, settings.tenant, producer=self.producer)
        extra: dict[str, Any] = {"fetch.wait.max.ms": s.fetch_wait_max_ms}
        if s.group_instance_id:
            extra["group.instance.id"] = s.group_instance_id
        self.runner = ConsumerRunner(
            self.kafka, self.topics, s.group_id,
            [Subscription(INTERACTIONS, self.handler.handle_interactions),
             Subscription(RECOMMENDATIONS_SERVED, self.handler.handle_served),
             Subscription(CATALOG_ITEMS, self.handler.handle_catalog)],
            producer=self.producer, schema_registry_url=settings.schema_registry_url,
            client_id="feedback", extra_config=extra,
        )  # fmt: skip
        self.seen_runner = None
        if s.seen_fast_lane:
            self.seen_runner = ConsumerRunner(
                self.kafka, self.topics, f"{s.group_id}-seen",
                [Subscription(INTERACTIONS, self.handler.handle_seen, dlq=False)],
                producer=self.producer, schema_registry_url=settings.schema_registry_url,
                client_id="feedback-seen",
                extra_config={**extra, **({"group.instance.id": f"{s.group_instance_id}-seen"}
                                          if s.group_instance_id else {})},
            )  # fmt: skip
        self._threads: list[threading.Thread] = []

    def start(self) -> FeedbackService:
        self._threads = [r.start_thread() for r in (self.runner, self.seen_runner) if r is not None]
        return self

    def stop(self, timeout: float = 30.0) -> None:
        for r in (self.runner, self.seen_runner):
            if r is not None:
                r.stop()
        for t in self._threads:
            t.join(timeout)
        self.producer.close(10)
        self.redis.close()

    def ready_check(self) -> tuple[bool, dict[str, Any]]:
        ok = self.runner.ready.is_set() and (self.seen_runner is None or self.seen_runner.ready.is_set())
        details: dict[str, Any] = {"consumers": "assigned" if ok else "starting",
                                   "consumer_lag": self.runner.total_lag()}  # fmt: skip
        try:
            self.redis.ping()
            details["redis"] = "ok"
        except Exception as exc:
            ok = False
            details["redis"] = f"unreachable: {type(exc).__name__}"
        return ok, details


def build_app(settings: FeedbackSettings) -> FastAPI:
    """Ops-only FastAPI app (health, readiness, metrics) whose lifespan runs the consumers."""
    return create_service_app(
        "recmesh-feedback",
        lambda: FeedbackService(settings),
        description="Popularity, trending, co-visitation, seen items, attribution, CTR.",
    )
