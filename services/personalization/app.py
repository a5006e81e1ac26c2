"""Wiring of the personalization service: Redis, model book, two consumer runners, HTTP ops app.

* The **interactions runner** (group ``personalization.group_id``, shared by the replicas so
  each user's partition has one owner) applies interactions to user state.
* The **control runner** (a group of its own per process, read from the beginning) sees every
  ``models.published.v1`` message — every replica must hot-swap every model — and the whole
  compacted ``catalog.items.v1`` (item categories for affinities). Reading from the beginning
  replays superseded publishes; the handler acts only on the newest per model that is still the
  registry's champion (the champion itself was loaded before the runners started).

Start-up order: load the registry's champions (bulk-loading their user vectors) first, then
start both runners, so no interaction is folded into a user vector before the model is live.
``/readyz`` is 503 until then. Shutdown (SIGTERM): stop the runners (each finishes its batch
and commits), join them, close Redis.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from fastapi import FastAPI

from recmesh.core.bus import ConsumerRunner, Subscription
from recmesh.core.registry import Registry
from recmesh.core.store import connect
from recmesh.core.topics import CATALOG_ITEMS, INTERACTIONS, MODELS_PUBLISHED, TopicRegistry
from recmesh.core.web import create_service_app
from recmesh.personalization.handlers import PersonalizationHandler
from recmesh.personalization.settings import PersonalizationSettings

log = logging.getLogger(__name__)


class PersonalizationService:
    """The consumers and their shared state; usable without HTTP (tests, benchmarks)."""

    def __init__(self, settings: PersonalizationSettings) -> None:
        self.settings = settings
        s = settings.personalization
        self.topics = TopicRegistry(prefix=settings.kafka.topic_prefix)
        self.redis = connect(settings.redis)
        self.registry = Registry(settings.registry.uri)
        self.handler = PersonalizationHandler(self.redis, settings.redis, s, settings.tenant, registry=self.registry)
        self.kafka = settings.kafka.model_copy(update={"consumer_poll_timeout_s": s.poll_timeout_s})
        extra: dict[str, Any] = {"fetch.wait.max.ms": s.fetch_wait_max_ms}
        self.runner = ConsumerRunner(
            self.kafka, self.topics, s.group_id,
            [Subscription(INTERACTIONS, self.handler.handle_interactions)],
            schema_registry_url=settings.schema_registry_url, client_id="personalization",
            extra_config={**extra, **({"group.instance.id": s.group_instance_id} if s.group_instance_id else {})},
        )  # fmt: skip
        self.control = ConsumerRunner(
            self.kafka, self.topics, f"{s.group_id}-ctl-{uuid.uuid4().hex[:12]}",
            [Subscription(MODELS_PUBLISHED, self.handler.handle_published, dlq=False),
             Subscription(CATALOG_ITEMS, self.handler.handle_catalog, dlq=False)],
            schema_registry_url=settings.schema_registry_url, client_id="personalization-ctl",
            extra_config=extra,
        )  # fmt: skip
        self.models_loaded = threading.Event()
        self._threads: list[threading.Thread] = []
        self._starter: threading.Thread | None = None
        self._stopping = threading.Event()

    def load_champions(self) -> None:
        reg = self.registry
        names = list(self.settings.personalization.models) or reg.models()
        for name in names:
            try:
                info = reg.champion(name)
                if info is not None:
                    self.handler.activate(name, info.version, info.uri or reg.version_uri(name, info.version))
            except Exception:  # one broken model must not keep the others (or the service) down
                log.exception("could not load champion", extra={"model": name})

    def _start(self) -> None:
        try:
            self.load_champions()
        finally:
            self.models_loaded.set()
        if not self._stopping.is_set():
            self._threads = [self.runner.start_thread(), self.control.start_thread()]

    def start(self) -> PersonalizationService:
        """Load champions then start the runners, in the background."""
        self._starter = threading.Thread(target=self._start, name="personalization-start", daemon=True)
        self._starter.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._starter is not None:
            self._starter.join(timeout)
        self.runner.stop()
        self.control.stop()
        for t in self._threads:
            t.join(timeout)
        self.redis.close()

    def ready_check(self) -> tuple[bool, dict[str, Any]]:
        details: dict[str, Any] = {
            "models": {lm.name: lm.version for lm in self.handler.models.live()},
            "consumer_lag": self.runner.total_lag(),
        }
        ok = self.models_loaded.is_set() and self.runner.ready.is_set() and self.control.ready.is_set()
        details["consumers"] = "assigned" if ok else "starting"
        try:
            self.redis.ping()
            details["redis"] = "ok"
        except Exception as exc:
            ok = False
            details["redis"] = f"unreachable: {type(exc).__name__}"
        return ok, details


def build_app(settings: PersonalizationSettings) -> FastAPI:
    """Ops-only FastAPI app (health, readiness, metrics) whose lifespan runs the consumers."""
    return create_service_app(
        "recmesh-personalization",
        lambda: PersonalizationService(settings),
        description="Real-time user vectors, recent items and affinities.",
    )
