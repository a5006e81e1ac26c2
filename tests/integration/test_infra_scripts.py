"""The local-infrastructure scripts behave on bad input: a taken port is named, a second start
starts nothing, a stop with nothing running succeeds, a broker that cannot start (or starts and
exits) fails fast with the tail of its log instead of hanging, and `start` returns only once the
broker answers metadata requests. Ports are free ephemeral ones (never the suite's 19092/39092)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(script: str, cmd: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(ROOT / "infra" / script), cmd], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_redis_script_start_twice_stop_twice_and_taken_port(tmp_path: Path) -> None:
    """Exists because `make up` twice must not start a second server and `make down` must be safe."""
    env = {"REDIS_PORT": str(_free_port()), "REDIS_DATA": str(tmp_path / "redis"), "REDIS_PERSIST": "0"}
    try:
        first = _run("redis/redis.sh", "start", env)
        assert first.returncode == 0, first.stderr
        second = _run("redis/redis.sh", "start", env)
        assert second.returncode == 0 and "already running" in second.stdout
    finally:
        assert _run("redis/redis.sh", "stop", env).returncode == 0
    again = _run("redis/redis.sh", "stop", env)
    assert again.returncode == 0 and "not running" in again.stdout

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = _run("redis/redis.sh", "start", {**env, "REDIS_PORT": str(port)})
    assert taken.returncode != 0
    assert f"port {port} is already in use" in taken.stderr


def test_kafka_script_names_a_taken_port_and_fails_fast_when_the_broker_cannot_start(tmp_path: Path) -> None:
    """Exists because a broker that fails to start must fail the command with its log, not hang."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = _run("kafka/kafka.sh", "start", {"KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(_free_port()),
                                                 "KAFKA_DATA": str(tmp_path / "k1")})  # fmt: skip
    assert taken.returncode != 0 and f"port {port} is already in use" in taken.stderr

    jars = tmp_path / "no-jars"
    jars.mkdir()
    (jars / ".complete").touch()  # a cache that claims to be complete but holds no broker
    env = {"KAFKA_PORT": str(_free_port()), "KAFKA_CONTROLLER_PORT": str(_free_port()),
           "KAFKA_DATA": str(tmp_path / "k2"), "KAFKA_JARS": str(jars), "KAFKA_START_TIMEOUT": "30"}  # fmt: skip
    broken = _run("kafka/kafka.sh", "start", env, timeout=60)
    assert broken.returncode != 0
    assert "failed" in broken.stderr or "exited" in broken.stderr
    assert "kafka.tools.StorageTool" in broken.stderr or "ClassNotFound" in broken.stderr  # the log tail
    assert _run("kafka/kafka.sh", "stop", env).returncode == 0


def _kafka_env(data: Path) -> dict[str, str]:
    return {"KAFKA_PORT": str(_free_port()), "KAFKA_CONTROLLER_PORT": str(_free_port()), "KAFKA_DATA": str(data),
            "KAFKA_START_TIMEOUT": "90"}  # fmt: skip


def test_kafka_script_start_twice_keeps_one_broker_that_already_answers_metadata(tmp_path: Path) -> None:
    """Exists because `make up` twice must not start a second broker, and a `start` that returned
    must mean clients get metadata at once (not just an open port)."""
    from confluent_kafka.admin import AdminClient

    data = tmp_path / "k"
    env = _kafka_env(data)
    try:
        first = _run("kafka/kafka.sh", "start", env, timeout=150)
        assert first.returncode == 0, first.stderr
        pid = (data / "kafka.pid").read_text().strip()
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{env['KAFKA_PORT']}"}).list_topics(timeout=5)
        assert 1 in metadata.brokers
        second = _run("kafka/kafka.sh", "start", env)
        assert second.returncode == 0 and f"already running (pid {pid}" in second.stdout
        assert (data / "kafka.pid").read_text().strip() == pid
        assert _run("kafka/kafka.sh", "status", env).stdout.startswith(f"kafka: up (pid {pid}")
    finally:
        assert _run("kafka/kafka.sh", "stop", env).returncode == 0
    assert _run("kafka/kafka.sh", "status", env).returncode == 3


def test_kafka_script_fails_start_with_the_log_tail_when_the_broker_exits(tmp_path: Path) -> None:
    """Exists because a broker that starts and then dies (here: corrupt storage metadata) must fail
    `start` with the reason from its log, and leave no pid file behind."""
    data = tmp_path / "k"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "meta.properties").write_text("this is not a properties file of a formatted log dir\n")
    env = _kafka_env(data)
    broken = _run("kafka/kafka.sh", "start", env, timeout=120)
    assert broken.returncode != 0
    assert "exited during start-up" in broken.stderr
    assert "Exiting Kafka due to fatal exception" in broken.stderr  # the log tail names the cause
    assert not (data / "kafka.pid").exists()
    again = _run("kafka/kafka.sh", "stop", env)
    assert again.returncode == 0 and "not running" in again.stdout
