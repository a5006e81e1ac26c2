"""Session fixtures: a real Kafka broker and a real Redis (see tests/infra.py), and
per-test isolation: a fresh topic prefix, consumer group, tenant and registry directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.infra import start_kafka, start_redis, unique


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    svc = start_kafka()
    try:
        yield svc.address
    finally:
        if svc.stop:
            svc.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    svc = start_redis()
    try:
        yield svc.address
    finally:
        if svc.stop:
            svc.stop()


@pytest.fixture
def test_id() -> str:
    return unique("t")


@pytest.fixture
def tenant(test_id: str) -> str:
    """A tenant of its own: every Redis key of this test lives under ``rm:<tenant>:``."""
    return f"tn{test_id}"


@pytest.fixture
def group_id(test_id: str) -> str:
    return f"g-{test_id}"


@pytest.fixture
def admin(kafka_bootstrap: str) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": kafka_bootstrap})


@pytest.fixture
def topics(admin: Any, test_id: str) -> Iterator[Any]:
    """A TopicRegistry with a unique prefix, created on the broker, deleted afterwards."""
    from recmesh.core.topics import TopicRegistry

    reg = TopicRegistry(prefix=f"{test_id}.", partitions=2)
    reg.ensure(admin)
    yield reg
    reg.delete_all(admin)


@pytest.fixture
def settings_factory(
    kafka_bootstrap: str, redis_url: str, topics: Any, tenant: str, tmp_path: Path
) -> Callable[..., Any]:
    """Build ServiceSettings (or a subclass) pointed at the test broker, Redis and topics."""
    from recmesh.core.settings import ServiceSettings

    def make(cls: type[Any] = ServiceSettings, **overrides: Any) -> Any:
        base: dict[str, Any] = {
            "env": "test",
            "tenant": tenant,
            "log_json": False,
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "topic_prefix": topics.prefix,
                "retry_backoff_s": 0.05,
            },  # fmt: skip
            "redis": {"url": redis_url},
            "registry": {"uri": str(tmp_path / "registry")},
            "http": {"port": 0},
        }
        for k, v in overrides.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                base[k] = {**base[k], **v}
            else:
                base[k] = v
        return cls(**base)

    return make


@pytest.fixture
def redis_client(redis_url: str, tenant: str) -> Iterator[Any]:
    """A client on the test Redis; this test's tenant keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    for key in client.scan_iter(match=f"rm:{tenant}:*", count=1000):
        client.delete(key)
    client.close()
