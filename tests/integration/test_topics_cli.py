"""``recmesh topics`` against a real broker: ensure is idempotent and repairs drift, list shows
consumer lag, replay makes a group re-read (and refuses while the group is running), dlq peeks."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
from typer.testing import CliRunner

from recmesh.cli import app
from recmesh.core.bus import ConsumerRunner, EventProducer, Record, Subscription
from recmesh.core.events import Interaction, new_id, now_ms
from recmesh.core.topics import INTERACTIONS, TopicRegistry
from tests.integration.test_bus import Running, wait_for

pytestmark = pytest.mark.integration


def cli(*args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(app, ["topics", *args])
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}"
    return result


def cli_json(*args: str) -> Any:
    return json.loads(cli(*args, "--json").stdout)


def test_ensure_is_idempotent_and_repairs_config_drift(kafka_bootstrap, admin, test_id):
    """Exists because operators run `ensure` on every deploy: the first run creates every topic and
    DLQ, later runs change nothing, and a config changed by hand is put back."""
    prefix = f"{test_id}.cli."
    reg = TopicRegistry(prefix)
    common = ("--bootstrap", kafka_bootstrap, "--prefix", prefix, "--partitions", "2")
    try:
        first = cli_json("ensure", *common)
        assert {r["topic"] for r in first} == {reg.name(s) for s in reg.specs()}
        assert {r["action"] for r in first} == {"created"}
        assert {r["action"] for r in cli_json("ensure", *common)} == {"ok"}

        name = reg.name(INTERACTIONS)
        res = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=[
            ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])  # fmt: skip
        for fut in admin.incremental_alter_configs([res]).values():
            fut.result()
        # Config changes reach describe_configs asynchronously (KRaft metadata propagation).
        wait_for(lambda: reg._describe_configs(admin, [name], 10)[name]["retention.ms"] == "1000", 10,
                 "the hand-made change to be visible", every=0.1)  # fmt: skip
        third = {r["topic"]: r["action"] for r in cli_json("ensure", *common)}
        assert third[name] == f"retention.ms={INTERACTIONS.retention_ms}"
        assert {a for t, a in third.items() if t != name} == {"ok"}
        assert {r["action"] for r in cli_json("ensure", *common)} == {"ok"}
        table = cli("ensure", *common).stdout
        assert name in table and "ok" in table
    finally:
        reg.delete_all(admin)


def _group_row(listing: dict[str, Any], group: str, topic: str) -> dict[str, Any]:
    rows = [r for r in listing["groups"] if r["group"] == group and r["topic"] == topic]
    assert len(rows) == 1, listing["groups"]
    return rows[0]


@pytest.mark.timeout(90)
def test_list_shows_lag_and_replay_makes_the_group_reread(settings_factory, topics, group_id, kafka_bootstrap):
    """Exists because rebuilding a service's state is `replay` + restart: lag must be visible, the
    reset must be refused while the service runs, and after it the group reads everything again."""
    settings = settings_factory()
    common = ("--bootstrap", kafka_bootstrap, "--prefix", topics.prefix)
    topic = topics.name(INTERACTIONS)
    producer = EventProducer(settings.kafka, topics, client_id="cli")

    def produce(n: int) -> None:
        for i in range(n):
            producer.send(INTERACTIONS, Interaction(new_id(), f"u{i}", "i", "view", None, now_ms()))
        assert producer.flush(10) == 0

    got: list[str] = []
    lock = threading.Lock()

    def handler(records: list[Record[Interaction]]) -> None:
        with lock:
            got.extend(r.value.event_id for r in records if r.value is not None)

    def runner() -> ConsumerRunner:
        return ConsumerRunner(settings.kafka, topics, group_id, [Subscription(INTERACTIONS, handler)])

    try:
        produce(10)
        with Running(runner()):
            wait_for(lambda: len(got) == 10, 20, "the first 10 events")
            # The group is running: a reset must be refused with a clear message.
            refused = cli("replay", "interactions.v1", "--group", group_id, "--from-beginning", *common, code=1)
            assert "active member" in refused.output
        produce(7)
        row = _group_row(cli_json("list", *common, "--group", group_id), group_id, topic)
        assert (row["committed"], row["end"], row["lag"], row["state"]) == (10, 17, 7, "empty")
        assert group_id in cli("list", *common, "--group", group_id).stdout

        out = cli_json("replay", "interactions.v1", "--group", group_id, "--from-beginning", *common)
        assert {p["after"] for p in out["partitions"]} == {0}
        assert sum(p["to_read"] for p in out["partitions"]) == 17
        assert _group_row(cli_json("list", *common, "--group", group_id), group_id, topic)["lag"] == 17

        got.clear()
        with Running(runner()):
            wait_for(lambda: len(got) == 17, 20, "the replayed 17 events")
        time.sleep(0.2)
        assert len(got) == 17 and len(set(got)) == 17
    finally:
        producer.close()


def test_replay_from_a_timestamp(topics, kafka_bootstrap, group_id):
    """Exists because a partial rebuild starts at a time, given as epoch ms or ISO 8601."""
    common = ("--bootstrap", kafka_bootstrap, "--prefix", topics.prefix)
    topic = topics.name(INTERACTIONS)
    base = now_ms() - 60_000
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(10):
        p.produce(topic, b"x", b"k", partition=0, timestamp=base + i * 1000)
    assert p.flush(10) == 0

    out = cli_json("replay", "interactions.v1", "--group", group_id, "--from-timestamp", str(base + 4500), *common)
    assert {r["partition"]: r["after"] for r in out["partitions"]} == {0: 5, 1: 0}
    iso = datetime.fromtimestamp((base + 7000) / 1000, UTC).isoformat()
    out = cli_json("replay", topic, "--group", group_id, "--from-timestamp", iso, *common)
    assert out["partitions"][0]["after"] == 7
    assert _group_row(cli_json("list", *common, "--group", group_id), group_id, topic)["lag"] == 3
    cli("replay", "interactions.v1", "--group", group_id, "--from-timestamp", "yesterday-ish", *common, code=1)
    cli("replay", "no.such.topic", "--group", group_id, "--from-beginning", *common, code=1)


def test_dlq_peek_shows_the_error_headers(settings_factory, topics, kafka_bootstrap):
    """Exists because an operator must see why a message was dead-lettered without consuming it."""
    settings = settings_factory()
    producer = EventProducer(settings.kafka, topics, client_id="dlq")
    headers = [("error", b"boom"), ("error_class", b"DecodeError"), ("source_topic", b"x"),
               ("source_partition", b"1"), ("source_offset", b"42")]  # fmt: skip
    producer.produce_raw(topics.dlq(INTERACTIONS), b"\x00bad", b"u9", headers)
    assert producer.flush(10) == 0
    producer.close()
    out = cli_json("dlq", "interactions.v1", "--bootstrap", kafka_bootstrap, "--prefix", topics.prefix)
    assert len(out["dead_letters"]) == 1
    letter = out["dead_letters"][0]
    assert letter["key"] == "u9" and letter["value_head"] == "00626164"
    assert letter["headers"]["error_class"] == "DecodeError" and letter["headers"]["source_offset"] == "42"
    assert "DecodeError" in cli("dlq", "interactions.v1", "--bootstrap", kafka_bootstrap, "--prefix",
                                topics.prefix).stdout  # fmt: skip
