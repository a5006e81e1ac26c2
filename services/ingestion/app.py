"""Wiring of the ingestion service: producer, Redis (idempotency keys), auth, lifespan, routes.

``build_app(settings)`` returns the FastAPI app; its lifespan starts the idempotent Avro
producer (and its poll thread), opens an asyncio Redis client for event-id dedupe, ensures
the topics exist and keeps a cached readiness flag fresh (broker reachable, Redis answers)
so that ``/readyz`` never blocks the event loop. On shutdown (SIGTERM) the producer is
flushed before the process exits. ``app_from_env`` is the factory uvicorn calls in each
worker process when ``http.workers > 1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from fastapi import FastAPI

from recmesh.core.bus import EventProducer
from recmesh.core.events import Interaction
from recmesh.core.store import Keys
from recmesh.core.topics import TopicRegistry
from recmesh.core.web import ApiKeyAuth, create_app
from recmesh.ingestion.handlers import EventValidator
from recmesh.ingestion.settings import IngestionSettings

log = logging.getLogger(__name__)
DEDUPE_CONSUMER = "ingestion"


# SET NX EX for every id in one round trip. ARGV: ttl, then (key prefix, ids joined by "\n") per
# tenant. Sending two strings per tenant instead of one argument per key keeps the client's
# command packing (the costliest part of a 500-key claim) flat. The reply is one string of
# '1' (new) / '0' (seen) per id, in order.
_CLAIM_LUA = """
local ttl = ARGV[1]
local out = {}
local n = 0
for g = 2, #ARGV, 2 do
  local prefix, ids = ARGV[g], ARGV[g + 1]
  for id in string.gmatch(ids, "[^\\n]+") do
    n = n + 1
    if redis.call('SET', prefix .. id, '1', 'NX', 'EX', ttl) then out[n] = '1' else out[n] = '0' end
  end
end
return table.concat(out)
"""


class IdempotencyKeys:
    """Client event ids accepted once per tenant: ``SET rm:<tenant>:dd:ingestion:<id> 1 NX EX ttl``.

    ``claim`` marks the ids and says which were new; ``release`` forgets ids whose events
    were then not accepted (backpressure, broker failure), so that the client's retry is
    not mistaken for a duplicate. ``mode="script"`` claims a whole batch with one Lua call;
    ``mode="pipeline"`` (one SET per event) is for Redis Cluster, where a script must
    declare its keys and they must share a slot.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: int, mode: str = "script") -> None:
        self.r = client
        self.ttl_s = ttl_s
        self.mode = mode
        self._keys: dict[str, Keys] = {}
        self._prefixes: dict[str, str] = {}
        self._script = client.register_script(_CLAIM_LUA)

    def key(self, tenant: str, event_id: str) -> str:
        k = self._keys.get(tenant)
        if k is None:
            k = self._keys[tenant] = Keys(tenant)
        return k.dedupe(DEDUPE_CONSUMER, event_id)

    def _prefix(self, tenant: str) -> str:
        p = self._prefixes.get(tenant)
        if p is None:
            p = self._prefixes[tenant] = self.key(tenant, "")
            assert self.key(tenant, "x") == p + "x", "Keys.dedupe must end with the event id"
        return p

    async def claim(self, events: Sequence[Interaction]) -> list[bool]:
        if not events:
            return []
        if self.mode == "script" and not any("\n" in ev.event_id for ev in events):
            groups: dict[str, list[int]] = {}
            for i, ev in enumerate(events):
                groups.setdefault(ev.tenant, []).append(i)
            args: list[Any] = [self.ttl_s]
            order: list[int] = []
            for tenant, idx in groups.items():
                args.append(self._prefix(tenant))
                args.append("\n".join([events[i].event_id for i in idx]))
                order.extend(idx)
            flags = await self._script(keys=[], args=args)
            out = [False] * len(events)
            for pos, i in enumerate(order):
                out[i] = flags[pos] == 49  # ord("1")
            return out
        pipe = self.r.pipeline(transaction=False)
        for ev in events:
            pipe.set(self.key(ev.tenant, ev.event_id), b"1", nx=True, ex=self.ttl_s)
        return [bool(x) for x in await pipe.execute()]

    async def release(self, events: Sequence[Interaction]) -> None:
        if events:
            await self.r.delete(*[self.key(ev.tenant, ev.event_id) for ev in events])


@dataclass
class Ingestion:
    """Everything a request handler needs, built once per process."""

    settings: IngestionSettings
    topics: TopicRegistry
    auth: ApiKeyAuth
    validator: EventValidator
    producer: EventProducer | None = None
    redis: aioredis.Redis | None = None
    dedupe: IdempotencyKeys | None = None
    ready: bool = False
    ready_details: dict[str, Any] = field(default_factory=dict)

    @property
    def queue_bound(self) -> int:
        s = self.settings
        return s.ingestion.max_queue_depth or s.kafka.producer_queue_max_messages

    def ready_check(self) -> tuple[bool, dict[str, Any]]:
        return self.ready, dict(self.ready_details)

    async def refresh_readiness(self) -> None:
        details: dict[str, Any] = {}
        ok = self.producer is not None and await asyncio.to_thread(self.producer.ping, 2.0)
        details["broker"] = "ok" if ok else "unreachable"
        if self.redis is not None:
            try:
                await asyncio.wait_for(self.redis.ping(), 2.0)
                details["redis"] = "ok"
            except Exception as exc:
                ok = False
                details["redis"] = f"unreachable: {type(exc).__name__}"
        self.ready, self.ready_details = bool(ok), details


def _ensure_topics(settings: IngestionSettings, topics: TopicRegistry) -> None:
    from confluent_kafka.admin import AdminClient

    try:
        topics.ensure(AdminClient(settings.kafka.client_config()), timeout=10)
    except Exception as exc:  # someone else (the stack, the chart's job) may own topic creation
        log.warning("could not ensure topics", extra={"error": str(exc)})


def build_app(settings: IngestionSettings, ensure_topics: bool = True) -> FastAPI:
    """The ingestion FastAPI app for ``settings`` (lifespan opens and closes the producer and Redis)."""
    from recmesh.ingestion import api

    topics = TopicRegistry(prefix=settings.kafka.topic_prefix)
    state = Ingestion(
        settings=settings,
        topics=topics,
        auth=ApiKeyAuth(settings.auth),
        validator=EventValidator(settings.ingestion),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if ensure_topics:
            await asyncio.to_thread(_ensure_topics, settings, topics)
        state.producer = EventProducer(
            settings.kafka, topics, client_id="ingestion", schema_registry_url=settings.schema_registry_url
        ).start()
        if settings.ingestion.dedupe:
            r = settings.redis
            state.redis = aioredis.Redis.from_url(
                r.url,
                password=r.password.get_secret_value() if r.password else None,
                socket_timeout=r.socket_timeout_s,
                socket_connect_timeout=r.socket_timeout_s,
            )
            state.dedupe = IdempotencyKeys(state.redis, settings.ingestion.dedupe_ttl_s, settings.ingestion.dedupe_mode)
        await state.refresh_readiness()

        async def watch() -> None:
            while True:
                await asyncio.sleep(2.0)
                await state.refresh_readiness()

        watcher = asyncio.create_task(watch())
        log.info("ingestion started", extra={"topics_prefix": topics.prefix, "ready": state.ready})
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            state.ready = False
            producer, state.producer = state.producer, None
            if producer is not None:
                await asyncio.to_thread(producer.close, 30.0)
            if state.redis is not None:
                await state.redis.aclose()
            log.info("ingestion stopped")

    app = create_app(
        "Recmesh ingestion",
        state.ready_check,
        lifespan=lifespan,
        description=api.DESCRIPTION,
    )
    app.state.ingestion = state
    api.register(app, state)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory for multi-worker mode: each worker builds its settings from the environment."""
    from recmesh.core.logs import configure_logging

    settings = IngestionSettings()
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    return build_app(settings)
