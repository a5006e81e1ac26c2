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
import math
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


# Claim states of an event id (the value of its key).
PENDING = "p"  # claimed by a request whose events the broker has not acknowledged yet (short TTL)
DONE = "1"  # acknowledged by the broker (full TTL); "1" is also what older versions wrote

# Claim answers, one per event.
NEW = "new"  # claimed now: produce it
DUPLICATE = "duplicate"  # already acknowledged (or repeated within the request): do not produce
IN_FLIGHT = "in_flight"  # another request holds a pending claim: neither produced nor a duplicate; retry

# SET NX EX (pending) for every id in one round trip. ARGV: ttl, then (key prefix, ids joined by
# "\n") per tenant. Sending two strings per tenant instead of one argument per key keeps the
# client's command packing (the costliest part of a 500-key claim) flat. The reply is one string
# of '1' (new) / '0' (done: a duplicate) / '2' (pending: in flight) per id, in order.
_CLAIM_LUA = """
local ttl = ARGV[1]
local out = {}
local n = 0
for g = 2, #ARGV, 2 do
  local prefix, ids = ARGV[g], ARGV[g + 1]
  for id in string.gmatch(ids, "[^\\n]+") do
    n = n + 1
    local key = prefix .. id
    if redis.call('SET', key, 'p', 'NX', 'EX', ttl) then
      out[n] = '1'
    elseif redis.call('GET', key) == 'p' then
      out[n] = '2'
    else
      out[n] = '0'
    end
  end
end
return table.concat(out)
"""

# SET EX (done) for every id, same arguments as the claim: one round trip per batch.
_CONFIRM_LUA = """
local ttl = ARGV[1]
for g = 2, #ARGV, 2 do
  local prefix, ids = ARGV[g], ARGV[g + 1]
  for id in string.gmatch(ids, "[^\\n]+") do
    redis.call('SET', prefix .. id, '1', 'EX', ttl)
  end
end
return 1
"""

# Forget a claim only while it is still pending: never erase an acknowledged id. One key per
# call, so it also runs on Redis Cluster.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == 'p' then return redis.call('DEL', KEYS[1]) end
return 0
"""
_CLAIM_ANSWER = {49: NEW, 48: DUPLICATE, 50: IN_FLIGHT}  # ord('1'), ord('0'), ord('2')


def pending_ttl(ack_timeout_s: float) -> int:
    """How long a claim stays pending: a few ack timeouts, so a live request always confirms or
    releases it first, while the claim of a process that died mid-request soon expires."""
    return max(5, math.ceil(3 * ack_timeout_s))


class IdempotencyKeys:
    """Client event ids accepted once per tenant, in two steps around the broker's acknowledgement.

    ``claim`` sets ``rm:<tenant>:dd:ingestion:<id>`` to *pending* with a short TTL (SET NX) and
    says, per event, whether it is new, a duplicate (already acknowledged) or in flight (another
    request's pending claim). ``confirm`` marks acknowledged ids *done* with the full TTL;
    ``release`` forgets pending claims whose events were then not accepted (backpressure, broker
    failure), so that the client's retry is not mistaken for a duplicate. A process that dies
    between claim and acknowledgement leaves only a pending claim: the client's retry is told
    "in flight, retry" until it expires, never "duplicate", so no event is lost.

    ``mode="script"`` claims (and confirms) a whole batch with one Lua call; ``mode="pipeline"``
    (one SET per event, one pipeline round trip) is for Redis Cluster, where a script must
    declare its keys and they must share a slot.
    """

    def __init__(self, client: aioredis.Redis, ttl_s: int, mode: str = "script", pending_ttl_s: int = 90) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self.pending_ttl_s = pending_ttl_s
        self.mode = mode
        self._keys: dict[str, Keys] = {}
        self._prefixes: dict[str, str] = {}
        self._claim = client.register_script(_CLAIM_LUA)
        self._confirm = client.register_script(_CONFIRM_LUA)
        self._release = client.register_script(_RELEASE_LUA)

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

    def _script_args(self, ttl: int, events: Sequence[Interaction]) -> tuple[list[Any], list[int]] | None:
        """(ARGV, event order of the reply) for the Lua scripts; None when an id cannot be sent that way."""
        if self.mode != "script" or any("\n" in ev.event_id for ev in events):
            return None
        groups: dict[str, list[int]] = {}
        for i, ev in enumerate(events):
            groups.setdefault(ev.tenant, []).append(i)
        args: list[Any] = [ttl]
        order: list[int] = []
        for tenant, idx in groups.items():
            args.append(self._prefix(tenant))
            args.append("\n".join([events[i].event_id for i in idx]))
            order.extend(idx)
        return args, order

    async def claim(self, events: Sequence[Interaction]) -> list[str]:
        """One answer per event: :data:`NEW`, :data:`DUPLICATE` or :data:`IN_FLIGHT`.

        An id repeated within ``events`` is claimed once; its repeats are duplicates.
        """
        out = [DUPLICATE] * len(events)
        seen: set[tuple[str, str]] = set()
        unique: list[int] = []
        for i, ev in enumerate(events):
            k = (ev.tenant, ev.event_id)
            if k not in seen:
                seen.add(k)
                unique.append(i)
        if not unique:
            return out
        batch = [events[i] for i in unique]
        prepared = self._script_args(self.pending_ttl_s, batch)
        if prepared is not None:
            args, order = prepared
            flags = await self._claim(keys=[], args=args)
            for pos, j in enumerate(order):
                out[unique[j]] = _CLAIM_ANSWER[flags[pos]]
            return out
        keys = [self.key(ev.tenant, ev.event_id) for ev in batch]
        pipe = self.r.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, PENDING, nx=True, ex=self.pending_ttl_s)
        fresh = await pipe.execute()
        taken = [j for j, ok in enumerate(fresh) if not ok]
        if taken:  # only off the happy path: tell pending claims from acknowledged ids
            pipe = self.r.pipeline(transaction=False)
            for j in taken:
                pipe.get(keys[j])
            states = await pipe.execute()
        for j, ok in enumerate(fresh):
            out[unique[j]] = NEW if ok else DUPLICATE
        if taken:
            for j, state in zip(taken, states, strict=True):
                # A key gone meanwhile (its pending claim expired) is not a duplicate either.
                out[unique[j]] = IN_FLIGHT if state in (PENDING.encode(), None) else DUPLICATE
        return out

    async def confirm(self, events: Sequence[Interaction]) -> None:
        """Mark claimed ids as acknowledged (done, full TTL)."""
        if not events:
            return
        prepared = self._script_args(self.ttl_s, events)
        if prepared is not None:
            await self._confirm(keys=[], args=prepared[0])
            return
        pipe = self.r.pipeline(transaction=False)
        for ev in events:
            pipe.set(self.key(ev.tenant, ev.event_id), DONE, ex=self.ttl_s)
        await pipe.execute()

    async def release(self, events: Sequence[Interaction]) -> None:
        """Forget the pending claims of events that were not accepted (the client may retry them)."""
        if not events:
            return
        pipe = self.r.pipeline(transaction=False)
        for ev in events:
            await self._release(keys=[self.key(ev.tenant, ev.event_id)], args=[], client=pipe)
        await pipe.execute()


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
            ing = settings.ingestion
            state.dedupe = IdempotencyKeys(
                state.redis, ing.dedupe_ttl_s, ing.dedupe_mode, pending_ttl_s=pending_ttl(ing.ack_timeout_s)
            )
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
