"""Helpers of the real-time integration tests: produce, wait, read a topic, snapshot a tenant's Redis state."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from recmesh.core.bus import ConsumerRunner, EventProducer, Record, Subscription
from recmesh.core.events import new_id
from recmesh.core.topics import TopicRegistry, TopicSpec


def produce(settings: Any, spec: TopicSpec, events: Iterable[Any]) -> int:
    producer = EventProducer(settings.kafka, TopicRegistry(prefix=settings.kafka.topic_prefix), client_id="test")
    n = 0
    for ev in events:
        producer.send(spec, ev)
        n += 1
    assert producer.flush(15) == 0
    producer.close()
    return n


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def read_topic(settings: Any, spec: TopicSpec, expect: int, idle_s: float = 1.5, timeout: float = 30.0) -> list[Any]:
    """Every event on ``spec`` (fresh group, from the beginning): waits for ``expect`` then ``idle_s`` more."""
    got: list[Any] = []

    def handler(records: list[Record[Any]]) -> None:
        got.extend(r.value for r in records)

    topics = TopicRegistry(prefix=settings.kafka.topic_prefix)
    runner = ConsumerRunner(settings.kafka, topics, f"read-{new_id()}", [Subscription(spec, handler, dlq=False)])
    t = runner.start_thread()
    try:
        wait_until(lambda: len(got) >= expect, timeout, f"{expect} events on {spec.name}")
        time.sleep(idle_s)  # anything beyond the expected count would show up here
    finally:
        runner.stop()
        t.join(15)
    return got


def snapshot(client: Any, tenant: str, skip: tuple[str, ...] = (":dd:",)) -> dict[str, Any]:
    """Every key of the tenant (but idempotency markers) with its value, by type."""
    out: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"rm:{tenant}:*", count=1000):
        key = raw.decode()
        if any(s in key for s in skip):
            continue
        kind = client.type(raw).decode()
        if kind == "string":
            out[key] = client.get(raw)
        elif kind == "list":
            out[key] = client.lrange(raw, 0, -1)
        elif kind == "hash":
            out[key] = client.hgetall(raw)
        elif kind == "zset":
            out[key] = client.zrange(raw, 0, -1, withscores=True)
        elif kind == "set":
            out[key] = sorted(client.smembers(raw))
    return out


def ctr(client: Any, key: str) -> tuple[int, int, int]:
    h = client.hgetall(key)
    return tuple(int(h.get(f, 0)) for f in (b"impressions", b"clicks", b"conversions"))  # type: ignore[return-value]
