"""Real Kafka and Redis for the test session.

Order of preference: running services named by ``RECMESH_TEST_KAFKA`` / ``RECMESH_TEST_REDIS``;
testcontainers when a Docker engine answers; otherwise local processes from ``infra/``
on test ports (Kafka 19092/19093, Redis 16379) with data under ``.local/test/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Service:
    address: str
    stop: Any = None
    notes: list[str] = field(default_factory=list)


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _wait_kafka(bootstrap: str, timeout: float = 60.0) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=5)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_redis(url: str, timeout: float = 30.0) -> None:
    """Until the Redis at ``url`` answers PING (a named one may still be loading or starting)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)
    finally:
        client.close()


def start_kafka() -> Service:
    env = os.environ.get("RECMESH_TEST_KAFKA")
    if env:
        _wait_kafka(env, 30)
        return Service(env)
    if _docker_available():
        try:
            try:
                from testcontainers.community.kafka import KafkaContainer
            except ImportError:  # older testcontainers releases
                from testcontainers.kafka import KafkaContainer

            c = KafkaContainer().with_kraft()
            c.start()
            return Service(c.get_bootstrap_server(), stop=c.stop)
        except ImportError:
            pass
    port = int(os.environ.get("RECMESH_TEST_KAFKA_PORT", "19092"))
    data = ROOT / ".local" / "test" / f"kafka-{port}"
    shutil.rmtree(data, ignore_errors=True)  # a fresh cluster every session
    envs = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(port + 1),
            "KAFKA_DATA": str(data), "KAFKA_HEAP": "512m"}  # fmt: skip
    script = str(ROOT / "infra" / "kafka" / "kafka.sh")
    subprocess.run([script, "start"], env=envs, check=True)

    def stop() -> None:
        subprocess.run([script, "stop"], env=envs, check=False)

    bootstrap = f"127.0.0.1:{port}"
    _wait_kafka(bootstrap)
    return Service(bootstrap, stop=stop)


def start_redis() -> Service:
    env = os.environ.get("RECMESH_TEST_REDIS")
    if env:
        _wait_redis(env)
        return Service(env)
    if _docker_available():
        try:
            try:
                from testcontainers.community.redis import RedisContainer
            except ImportError:  # older testcontainers releases
                from testcontainers.redis import RedisContainer

            c = RedisContainer("redis:7")
            c.start()
            url = f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
            _wait_redis(url)
            return Service(url, stop=c.stop)
        except ImportError:
            pass
    port = int(os.environ.get("RECMESH_TEST_REDIS_PORT", "16379"))
    data = ROOT / ".local" / "test" / f"redis-{port}"
    envs = {**os.environ, "REDIS_PORT": str(port), "REDIS_DATA": str(data), "REDIS_PERSIST": "0"}
    script = str(ROOT / "infra" / "redis" / "redis.sh")
    subprocess.run([script, "start"], env=envs, check=True)

    def stop() -> None:
        subprocess.run([script, "stop"], env=envs, check=False)

    return Service(f"redis://127.0.0.1:{port}/0", stop=stop)


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"
