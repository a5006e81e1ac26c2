"""Request-path reads of the online state in Redis (written by personalization and feedback).

All of one user's state comes back in ONE pipelined round trip: the user vector for the
served model version, recent items, seen items, and the trending lists of the request's
window (global and per category); the global popular list is refreshed in the background.
Co-visitation neighbours, which depend on the recent items, take a second round trip only
when the user has recent items.

A failed call opens a short circuit breaker (``redis_retry_s``): requests in that window
go straight to degraded mode instead of each paying a connection timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
import redis.exceptions as rex

from recmesh.core.settings import RedisSettings
from recmesh.core.store import Keys
from recmesh.scoring import metrics as sm

log = logging.getLogger(__name__)
_REDIS_ERRORS = (rex.RedisError, OSError, TimeoutError)


@dataclass(slots=True)
class UserState:
    """What Redis knows about one user (+ the trending lists read with it)."""

    vector: bytes | None = None
    recent: list[tuple[str, int]] = field(default_factory=list)  # (item, ts ms), newest first
    seen: list[str] = field(default_factory=list)
    trending: list[str] = field(default_factory=list)
    trending_global: list[str] = field(default_factory=list)


def _decode_list(values: list[bytes] | None) -> list[str]:
    return [v.decode() for v in values] if values else []


def parse_recent(raw: list[bytes] | None) -> list[tuple[str, int]]:
    """Recent-items entries (JSON ``{"item", "type", "ts"}``); malformed entries are skipped."""
    out = []
    for r in raw or ():
        try:
            d = orjson.loads(r)
            out.append((str(d["item"]), int(d.get("ts") or 0)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return out


class RedisPipeliner:
    """Batches of read commands in one round trip over ``redis.asyncio`` (non-transactional)."""

    def __init__(self, url: str, password: str | None, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        # A bounded pool that queues for a free connection (up to the timeout) instead of failing
        # at once when a burst outnumbers the connections: a burst then degrades, it does not error.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=timeout_s, password=password, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )  # fmt: skip
        self.redis = aioredis.Redis(connection_pool=pool)

    async def execute(self, cmds: list[tuple[Any, ...]]) -> list[Any]:
        async with asyncio.timeout(self.timeout_s):
            pipe = self.redis.pipeline(transaction=False)
            for c in cmds:
                pipe.execute_command(*c)
            return list(await pipe.execute())

    async def close(self) -> None:
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()


class StateReader:
    """Async Redis reads with a circuit breaker; ``None`` results mean degraded."""

    def __init__(self, redis_settings: RedisSettings, timeout_s: float, retry_s: float) -> None:
        pw = redis_settings.password.get_secret_value() if redis_settings.password else None
        self.client = RedisPipeliner(redis_settings.url, pw, timeout_s)
        self.retry_s = retry_s
        self._open_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def _failed(self, exc: BaseException) -> None:
        if self.available:
            log.warning("redis unavailable, serving degraded", extra={"error": repr(exc), "retry_s": self.retry_s})
        self._open_until = time.monotonic() + self.retry_s
        sm.REDIS_ERRORS.inc()

    async def _run(self, cmds: list[tuple[Any, ...]]) -> list[Any] | None:
        if not self.available:
            return None
        try:
            return await self.client.execute(cmds)
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return None

    async def user_state(
        self,
        keys: Keys,
        user_id: str,
        vector_key: str | None,
        recent_n: int,
        seen_n: int,
        trending_key: str | None,
        trending_global_key: str | None,
        popular_n: int,
    ) -> UserState | None:
        cmds: list[tuple[Any, ...]] = []
        if vector_key:
            cmds.append(("GET", vector_key))
        cmds.append(("LRANGE", keys.recent_items(user_id), 0, recent_n - 1))
        if seen_n:
            cmds.append(("ZREVRANGE", keys.seen(user_id), 0, seen_n - 1))
        if trending_key:
            cmds.append(("ZREVRANGE", trending_key, 0, popular_n - 1))
        if trending_global_key:
            cmds.append(("ZREVRANGE", trending_global_key, 0, popular_n - 1))
        res = await self._run(cmds)
        if res is None:
            return None
        it = iter(res)
        st = UserState()
        if vector_key:
            st.vector = next(it)
        st.recent = parse_recent(next(it))
        if seen_n:
            st.seen = _decode_list(next(it))
        if trending_key:
            st.trending = _decode_list(next(it))
        if trending_global_key:
            st.trending_global = _decode_list(next(it))
        return st

    async def covisit(self, keys: Keys, items: list[str], per_item: int) -> list[list[tuple[str, float]]] | None:
        """Co-visitation neighbours (best first, with weights) of each item."""
        if not items:
            return []
        res = await self._run([("ZREVRANGE", keys.covisit(i), 0, per_item - 1, "WITHSCORES") for i in items])
        if res is None:
            return None
        # redis-py pairs WITHSCORES replies up: each row is [(member, score), ...]
        return [[(m.decode(), float(sc)) for m, sc in row] for row in res]

    async def ranked(self, key: str, n: int) -> list[str] | None:
        """One sorted set, best first (popular/trending endpoint, background refresh)."""
        res = await self._run([("ZREVRANGE", key, 0, n - 1)])
        return None if res is None else _decode_list(res[0])

    async def ping(self) -> bool:
        return await self._run([("PING",)]) is not None

    async def close(self) -> None:
        await self.client.close()
