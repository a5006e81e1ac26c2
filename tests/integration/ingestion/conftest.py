"""Fixtures of the ingestion integration tests: the app in-process with its lifespan, and a reader."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from recmesh.core.codec import AvroCodec
from recmesh.core.topics import TopicRegistry, TopicSpec
from recmesh.ingestion.app import build_app
from recmesh.ingestion.settings import IngestionSettings


@pytest.fixture
def ingestion_factory(settings_factory, redis_client) -> Iterator[Callable[..., tuple[TestClient, IngestionSettings]]]:
    """Start the ingestion app (lifespan included: producer, Redis) against the test broker and Redis.

    Depends on ``redis_client`` so that the tenant's idempotency keys are deleted after the test.
    """
    clients: list[TestClient] = []

    def make(**overrides: Any) -> tuple[TestClient, IngestionSettings]:
        settings = settings_factory(IngestionSettings, **overrides)
        client = TestClient(build_app(settings, ensure_topics=False))
        client.__enter__()
        clients.append(client)
        return client, settings

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def read_topic(
    bootstrap: str, topics: TopicRegistry, spec: TopicSpec, expect: int, timeout: float = 20.0, settle: float = 1.0
) -> list[tuple[str | None, Any]]:
    """Every (key, decoded value) on the topic: waits for ``expect`` messages, then ``settle`` s for extras."""
    name = topics.name(spec)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})  # fmt: skip
    try:
        parts = c.list_topics(name, timeout=10).topics[name].partitions
        c.assign([TopicPartition(name, p, 0) for p in parts])
        codec = AvroCodec(spec.value) if spec.value is not None else None
        out: list[tuple[str | None, Any]] = []
        deadline = time.monotonic() + timeout
        extra_until: float | None = None
        while True:
            now = time.monotonic()
            if len(out) >= expect and extra_until is None:
                extra_until = now + settle
            if (extra_until is not None and now > extra_until) or now > deadline:
                break
            for msg in c.consume(1000, 0.2):
                if msg.error():
                    continue
                key = msg.key().decode() if msg.key() is not None else None
                raw = msg.value()
                out.append((key, None if raw is None or codec is None else codec.decode(raw)))
        return out
    finally:
        c.close()


def topic_count(bootstrap: str, topics: TopicRegistry, spec: TopicSpec) -> int:
    """Messages on a topic (sum of high watermarks; the topics are fresh per test)."""
    name = topics.name(spec)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{time.monotonic_ns()}"})
    try:
        parts = c.list_topics(name, timeout=10).topics[name].partitions
        return sum(c.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1] for p in parts)
    finally:
        c.close()
