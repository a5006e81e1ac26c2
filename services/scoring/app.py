"""Wiring of the scoring service: the FastAPI app, its lifespan and the gRPC server.

The lifespan starts (and stops, in reverse order on SIGTERM): the impression producer, the
async Redis reader, the model loader (a thread: the first load and HNSW build must not hold
up /healthz), the ``models.published.v1`` and ``catalog.items.v1`` consumer threads (each with
a group id unique to this replica, because every replica needs every message), a background
task refreshing the popular list / gRPC health / registry champions, and the grpc.aio server
in this same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.responses import Response

from recmesh.core.bus import ConsumerRunner, EventProducer, Subscription
from recmesh.core.registry import Registry
from recmesh.core.topics import CATALOG_ITEMS, MODELS_PUBLISHED, TopicRegistry
from recmesh.core.web import ApiKeyAuth, create_app
from recmesh.scoring.api import router
from recmesh.scoring.catalog import Catalog
from recmesh.scoring.engine import Engine
from recmesh.scoring.experiments import Experiments
from recmesh.scoring.impressions import ImpressionPublisher
from recmesh.scoring.models import ModelHolder
from recmesh.scoring.settings import ScoringSettings
from recmesh.scoring.state import StateReader

log = logging.getLogger(__name__)


def instance_id() -> str:
    """Unique per replica and start: consumer groups of 'every replica sees every message' topics."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Runtime:
    """What the lifespan owns; exposed as ``app.state.runtime`` (tests and ops introspection)."""

    def __init__(self, settings: ScoringSettings) -> None:
        self.settings = settings
        s = settings.scoring
        self.topics = TopicRegistry(prefix=settings.kafka.topic_prefix)
        self.models = ModelHolder(Registry(settings.registry.uri), s)
        self.catalog = Catalog(settings.tenant)
        self.experiments = Experiments(s.experiment)
        self.auth = ApiKeyAuth(settings.auth)
        self.instance = instance_id()
        self.engine: Engine | None = None
        self.state: StateReader | None = None
        self.impressions: ImpressionPublisher | None = None
        self.runners: list[tuple[ConsumerRunner, threading.Thread]] = []
        self.grpc: Any = None
        self.loaded = threading.Event()
        self._tasks: list[asyncio.Task[Any]] = []

    def ready(self) -> tuple[bool, dict[str, Any]]:
        e = self.engine
        ok = e is not None and e.ready
        return ok, {
            "models": self.models.versions(),
            "popular_fallback": bool(e and e.popular_cache.get(self.settings.tenant)),
            "redis": bool(self.state and self.state.available),
            "catalog_version": self.catalog.snapshot.version,
        }

    def _loader(self, models_runner: ConsumerRunner | None) -> None:
        try:
            self.models.load_initial()
        finally:
            self.loaded.set()
        # Move the long-lived objects built at start-up (catalog, indexes, models) out of the
        # collector's reach: full collections then stay short instead of pausing requests.
        gc.collect()
        gc.freeze()
        if models_runner is not None and models_runner.ready.wait(60):
            # a publish between the registry read and the partition assignment would be missed
            # by a consumer that starts at the latest offset: read the registry once more
            self.models.refresh_from_registry()

    async def _background(self) -> None:
        s = self.settings.scoring
        loop = asyncio.get_running_loop()
        next_poll = loop.time() + s.registry_poll_s
        while True:
            try:
                assert self.engine is not None
                await self.engine.refresh_popular()
                if self.grpc is not None:
                    await self.grpc.set_serving(self.engine.ready)
                if s.registry_poll_s and loop.time() >= next_poll and self.loaded.is_set():
                    next_poll = loop.time() + s.registry_poll_s
                    await asyncio.to_thread(self.models.refresh_from_registry)
            except Exception:  # the loop must survive anything; the next tick retries
                log.exception("background refresh failed")
            await asyncio.sleep(min(s.popular_refresh_s, 1.0) if not (self.engine and self.engine.ready) else
                                s.popular_refresh_s)  # fmt: skip

    async def start(self) -> None:
        st = self.settings
        s = st.scoring
        if s.impressions:
            producer = EventProducer(st.kafka, self.topics, client_id="scoring",
                                     schema_registry_url=st.schema_registry_url).start()  # fmt: skip
            self.impressions = ImpressionPublisher(producer, s.impression_queue_max).start()
        self.state = StateReader(st.redis, s.redis_timeout_s, s.redis_retry_s)
        self.engine = Engine(s, self.models, self.catalog, self.state, self.experiments, self.impressions, st.tenant)
        models_runner = None
        if s.consume_models:
            models_runner = ConsumerRunner(
                st.kafka, self.topics, f"recmesh-scoring-models-{self.instance}",
                [Subscription(MODELS_PUBLISHED, self.models.handle_published)],
                schema_registry_url=st.schema_registry_url, client_id="scoring-models",
                auto_offset_reset="latest",
            )  # fmt: skip
        if s.consume_catalog:
            catalog_runner = ConsumerRunner(
                st.kafka, self.topics, f"recmesh-scoring-catalog-{self.instance}",
                [Subscription(CATALOG_ITEMS, self.catalog.apply)],
                schema_registry_url=st.schema_registry_url, client_id="scoring-catalog",
                auto_offset_reset="earliest",
            )  # fmt: skip
            self.runners.append((catalog_runner, catalog_runner.start_thread()))
        if models_runner is not None:
            self.runners.append((models_runner, models_runner.start_thread()))
        threading.Thread(target=self._loader, args=(models_runner,), name="model-loader", daemon=True).start()
        if s.grpc_enabled:
            from recmesh.scoring.grpc_service import GrpcServer

            self.grpc = GrpcServer(self.engine, self.auth, st.tenant, s.grpc_host or st.http.host, s.grpc_port)
            await self.grpc.start()
        self._tasks.append(asyncio.create_task(self._background(), name="scoring-background"))

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for runner, _ in self.runners:
            runner.stop()
        for _, thread in self.runners:
            await asyncio.to_thread(thread.join, 15)
        if self.impressions is not None:
            await asyncio.to_thread(self.impressions.close, 10)
        if self.state is not None:
            await self.state.close()


def build_app(settings: ScoringSettings) -> FastAPI:
    """The scoring app (HTTP routes + lifespan that also runs gRPC)."""
    rt = Runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await rt.start()
        app.state.engine = rt.engine
        try:
            yield
        finally:
            await rt.stop()

    app = create_app("recmesh-scoring", rt.ready, lifespan=lifespan,
                     description="Recommendations over HTTP (and gRPC on scoring.grpc_port).")  # fmt: skip
    app.state.runtime = rt
    app.state.auth = rt.auth
    app.state.default_tenant = settings.tenant
    app.include_router(router)
    if settings.scoring.hello_route:

        @app.get("/_hello", include_in_schema=False)
        async def hello() -> Response:
            return Response(b'{"hello":"world"}', media_type="application/json")

    return app
