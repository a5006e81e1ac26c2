"""Redis key space and access helpers. Every key is built here and nowhere else.

Layout: ``rm:<tenant>:...``; a user's keys carry a Redis Cluster hash tag on the user id,
``rm:<tenant>:u:{<user_id>}:...``, so one user's state lives on one slot. Owners and TTLs
are documented per family (see README, "Redis key space"). Writes go through pipelines.

:class:`Deduper` gives handlers exactly-once effects on top of at-least-once delivery: the
ids already processed are read first, and the effects of the new ones are written together
with their markers in one MULTI/EXEC transaction — a crash either applies both or neither.
(The convention is ``pipeline(transaction=False)``; effects that must be exactly-once are
the deliberate exception.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import redis

from recmesh.core.errors import TransientError
from recmesh.core.settings import RedisSettings


def connect(settings: RedisSettings, decode_responses: bool = False) -> redis.Redis[Any]:
    """A pooled client with timeouts from settings (bytes responses by default)."""
    return redis.Redis.from_url(  # type: ignore[call-overload,no-any-return]
        settings.url,
        password=settings.password.get_secret_value() if settings.password else None,
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.socket_timeout_s,
        health_check_interval=30,
        decode_responses=decode_responses,
    )


class Keys:
    """Key builders, one method per family. Owner service and type in each docstring."""

    def __init__(self, tenant: str = "default") -> None:
        self.t = tenant
        self.p = f"rm:{tenant}"

    def for_tenant(self, tenant: str) -> Keys:
        return self if tenant == self.t else Keys(tenant)

    # -- per user (hash-tagged) -- personalization / feedback ---------------------------------
    def user(self, user_id: str) -> str:
        return f"{self.p}:u:{{{user_id}}}"

    def user_vector(self, user_id: str, model: str, version: str) -> str:
        """string, float32 bytes; owner personalization; TTL user_vector_ttl_s."""
        return f"{self.user(user_id)}:vec:{model}:{version}"

    def recent_items(self, user_id: str) -> str:
        """list of JSON {item, type, ts}, newest first, capped; owner personalization."""
        return f"{self.user(user_id)}:recent"

    def affinity(self, user_id: str) -> str:
        """hash category → decayed weight; owner personalization."""
        return f"{self.user(user_id)}:aff"

    def seen(self, user_id: str) -> str:
        """sorted set item → last interaction ms, capped; owner feedback."""
        return f"{self.user(user_id)}:seen"

    def covisit_history(self, user_id: str) -> str:
        """sorted set item → last interaction ms, written only by feedback's counting lane (so
        co-visitation never depends on the seen fast lane's progress); capped; owner feedback;
        TTL counters_ttl_s."""
        return f"{self.user(user_id)}:cvh"

    # -- per item / global -- feedback ---------------------------------------------------------
    def popularity(self) -> str:
        """sorted set item → exponentially decayed count (stored in log space); owner feedback."""
        return f"{self.p}:pop"

    def trending(self, window: str, category: str | None = None) -> str:
        """sorted set item → decayed count per window (1h, 1d, 7d), optionally per category; owner feedback."""
        return f"{self.p}:trend:{window}" + (f":c:{category}" if category else "")

    def covisit(self, item_id: str) -> str:
        """sorted set neighbour item → co-occurrence weight, top-N; owner feedback."""
        return f"{self.p}:cov:{{{item_id}}}"

    def impression(self, request_id: str) -> str:
        """hash of one served list awaiting attribution; owner feedback; TTL impression_ttl_s."""
        return f"{self.p}:imp:{request_id}"

    def impressions_due(self) -> str:
        """sorted set JSON [tenant, request_id] → ms when its attribution window closes; owner feedback
        (the timeout-negatives sweep claims and removes due members); TTL that of the impressions."""
        return f"{self.p}:impdue"

    def last_impression(self, user_id: str, item_id: str) -> str:
        """string request_id of the last impression of item to user; owner feedback."""
        return f"{self.user(user_id)}:lastimp:{item_id}"

    def ctr(self, dimension: str, value: str) -> str:
        """hash {impressions, clicks, conversions} per item/variant/model; owner feedback."""
        return f"{self.p}:ctr:{dimension}:{value}"

    def bandit(self, variant: str) -> str:
        """hash of bandit statistics per variant arm; owner feedback."""
        return f"{self.p}:bandit:{variant}"

    def item_meta(self, item_id: str) -> str:
        """hash title/categories/available of a catalog item; owner feedback (from catalog.items)."""
        return f"{self.p}:item:{item_id}"

    def dedupe(self, consumer: str, event_id: str) -> str:
        """string marker of a processed event id; owner: each consumer; TTL dedupe_ttl_s."""
        return f"{self.p}:dd:{consumer}:{event_id}"


class Deduper:
    """Idempotency by event id for one consumer, in Redis with a TTL."""

    def __init__(self, client: redis.Redis[Any], consumer: str, ttl_s: int, keys: Keys | None = None) -> None:
        self.r = client
        self.consumer = consumer
        self.ttl_s = ttl_s
        self.keys = keys or Keys()

    def _key(self, event_id: str, tenant: str | None) -> str:
        k = self.keys.for_tenant(tenant) if tenant else self.keys
        return k.dedupe(self.consumer, event_id)

    def unseen(self, ids: Sequence[tuple[str, str | None]]) -> list[bool]:
        """For each (event_id, tenant): True when not processed yet."""
        if not ids:
            return []
        found = self.r.mget([self._key(e, t) for e, t in ids])
        return _first_unseen(ids, found)

    def mark(self, pipe: Any, ids: Iterable[tuple[str, str | None]]) -> None:
        """Add markers to a (transactional) pipeline that also carries the effects."""
        for e, t in ids:
            pipe.set(self._key(e, t), b"1", ex=self.ttl_s)

    def transaction(self) -> Any:
        """A MULTI/EXEC pipeline: put the effects and :meth:`mark` in it, then ``execute()``."""
        return self.r.pipeline(transaction=True)

    def apply(
        self,
        ids: Sequence[tuple[str, str | None]],
        write: Callable[[Any, list[bool]], None],
        max_attempts: int = 20,
    ) -> list[bool]:
        """Exactly-once effects even when two consumers race on the same events.

        WATCHes the markers, reads them, then runs ``write(pipe, unseen)`` (queue the effects
        of the events whose flag is True) and the markers in one MULTI/EXEC. If another client
        marks one of these ids meanwhile, EXEC aborts and the whole step is retried, so an
        effect is never applied twice — unlike :meth:`unseen` + :meth:`transaction`, which is
        exact only while one consumer owns a partition (the normal case). Returns the flags.
        """
        if not ids:
            return []
        keys = [self._key(e, t) for e, t in ids]
        for _ in range(max_attempts):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(*keys)
                    found = cast(list[Any], pipe.mget(keys))  # immediate mode between WATCH and MULTI
                    flags = _first_unseen(ids, found)
                    pipe.multi()
                    write(pipe, flags)
                    self.mark(pipe, [p for p, new in zip(ids, flags, strict=True) if new])
                    pipe.execute()
                    return flags
                except redis.WatchError:
                    continue
        raise TransientError(f"dedupe transaction kept conflicting ({max_attempts} attempts)")


def _first_unseen(ids: Sequence[tuple[str, str | None]], found: Sequence[Any]) -> list[bool]:
    """True for ids without a marker, counting a repeated id within the batch once."""
    seen_in_batch: set[tuple[str, str | None]] = set()
    out = []
    for pair, v in zip(ids, found, strict=True):
        out.append(v is None and pair not in seen_in_batch)
        seen_in_batch.add(pair)
    return out
