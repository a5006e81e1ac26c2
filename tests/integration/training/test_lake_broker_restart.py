"""The lake sink across a broker restart: no row lost, none duplicated, the sink never gives up.

Exists because a broker restart (a rolling upgrade, a crash) is routine in production: the sink's
consumer loses its connection, its group coordinator and maybe an in-flight commit, and must carry
on where it stopped once the broker is back. The test runs a broker of its own (real Kafka, same
data directory across the restart) so the shared session broker is never touched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from recmesh.core.bus import EventProducer
from recmesh.core.events import Interaction
from recmesh.core.settings import KafkaSettings
from recmesh.core.topics import INTERACTIONS, TopicRegistry
from recmesh.training import lake

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[3]
KAFKA_SH = str(ROOT / "infra" / "kafka" / "kafka.sh")
T0 = 1_780_000_000_000


def _free_pair() -> int:
    """A port p with p + 1 free too (broker and controller listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = int(s.getsockname()[1])
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


def _produce(kafka: KafkaSettings, topics: TopicRegistry, events: list[Interaction]) -> None:
    producer = EventProducer(kafka, topics, client_id="restart-test")
    for e in events:
        producer.send(INTERACTIONS, e)
    assert producer.flush(30) == 0
    producer.close()


def _events(n: int, start: int = 0) -> list[Interaction]:
    return [Interaction(f"r{i}", f"u{i % 50}", f"i{i % 70}", "click", None, T0 + i, tenant="t")
            for i in range(start, start + n)]  # fmt: skip


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def test_lake_sink_survives_a_broker_restart_without_losing_or_duplicating_rows(tmp_path):
    port = _free_pair()
    env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(port + 1),
           "KAFKA_DATA": str(tmp_path / "kafka"), "KAFKA_HEAP": "384m"}  # fmt: skip
    subprocess.run([KAFKA_SH, "start"], env=env, check=True, capture_output=True)
    sink = thread = None
    try:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", retry_backoff_s=0.05)
        topics = TopicRegistry(prefix=f"restart-{uuid.uuid4().hex[:6]}.")
        topics.ensure(AdminClient({"bootstrap.servers": kafka.bootstrap_servers}))
        lake_uri = str(tmp_path / "lake")
        first = _events(1500)
        _produce(kafka, topics, first)
        sink = lake.LakeSink(kafka, topics, lake_uri, group_id="restart-sink", batch_rows=200, batch_seconds=0.3,
                             specs=[INTERACTIONS])  # fmt: skip
        thread = sink.start_thread()
        _wait(lambda: sink.rows_written >= len(first), 60, "the first events in the lake")

        subprocess.run([KAFKA_SH, "stop"], env=env, check=True, capture_output=True)
        time.sleep(2.0)  # the sink polls a dead broker for a while
        assert thread.is_alive(), "the sink must not stop when the broker goes away"
        subprocess.run([KAFKA_SH, "start"], env=env, check=True, capture_output=True)

        second = _events(1000, start=1500)
        _produce(kafka, topics, second)
        expected = sorted(e.event_id for e in first + second)
        _wait(lambda: len(lake.read_lake(lake_uri)) >= len(expected), 90, "every event after the restart")
        res = lake.read_lake_detailed(lake_uri)
        assert sorted(res.frame["event_id"]) == expected  # nothing lost, each event once
        assert res.corrupt == []
        assert thread.is_alive()
    finally:
        if sink is not None:
            sink.stop()
        if thread is not None:
            thread.join(30)
        subprocess.run([KAFKA_SH, "stop"], env=env, check=False, capture_output=True)
