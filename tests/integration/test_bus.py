"""The event bus against a real broker and a real Redis: every schema through Kafka, old
versions readable, poison messages dead-lettered, transient failures retried without commit,
exactly-once effects across SIGKILL, and consumer-group failover."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
import pytest
import redis
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, TopicPartition

from recmesh.core.bus import ConsumerRunner, EventProducer, Record, Subscription
from recmesh.core.codec import MAGIC, schema_store
from recmesh.core.errors import Backpressure, TransientError
from recmesh.core.events import Interaction, ItemUpdate, new_id, now_ms
from recmesh.core.settings import KafkaSettings
from recmesh.core.store import Deduper, Keys
from recmesh.core.topics import ALL, CATALOG_ITEMS, INTERACTIONS, TopicSpec
from tests.integration.bus_worker import counter_keys
from tests.unit.test_codec import full_events

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("bus_worker.py")


# -- helpers ---------------------------------------------------------------------------------------
def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Running:
    """A ConsumerRunner in a thread, stopped (finish batch, commit, close) on exit."""

    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner
        self.thread: threading.Thread | None = None

    def __enter__(self) -> ConsumerRunner:
        self.thread = self.runner.start_thread()
        assert self.runner.ready.wait(20), "no partition assignment within 20 s"
        return self.runner

    def __exit__(self, *exc: object) -> None:
        self.runner.stop()
        assert self.thread is not None
        self.thread.join(20)
        assert not self.thread.is_alive(), "runner did not stop"


def committed(admin: Any, group: str, topic: str, partitions: int = 2) -> dict[int, int]:
    req = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])]
    res = admin.list_consumer_group_offsets(req)[group].result()
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def end_offsets(kafka_bootstrap: str, topic: str, partitions: int = 2) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": "watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    finally:
        c.close()


def read_all(kafka_bootstrap: str, topic: str, n: int, timeout: float = 20.0) -> list[Any]:
    """The first ``n`` messages of a one-partition topic (e.g. a DLQ)."""
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": new_id(), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        c.close()
    return out


def spec_of(event: object) -> TopicSpec:
    return next(s for s in ALL if s.value is type(event))


def interaction(user: str, tenant: str, **kw: Any) -> Interaction:
    return Interaction(new_id(), user, f"i{random.randrange(50)}", "click", None, now_ms(), tenant=tenant, **kw)


# -- schemas through the broker ----------------------------------------------------------------------
def test_every_schema_round_trips_through_the_broker(settings_factory, topics, group_id):
    """Exists because each service decodes what another encoded: every record type (all fields set),
    its key, and a catalog tombstone must come out of Kafka exactly as they went in."""
    settings = settings_factory()
    sent = full_events()
    got: dict[str, list[Record[Any]]] = {}
    lock = threading.Lock()

    def handler(records: list[Record[Any]]) -> None:
        with lock:
            for r in records:
                got.setdefault(r.topic, []).append(r)

    subs = [Subscription(spec, handler) for spec in ALL]
    producer = EventProducer(settings.kafka, topics, client_id="rt").start()
    try:
        for ev in sent:
            producer.send(spec_of(ev), ev)
        producer.send_tombstone(CATALOG_ITEMS, "gone")
        assert producer.flush(10) == 0
        with Running(ConsumerRunner(settings.kafka, topics, group_id, subs)) as runner:
            wait_for(lambda: sum(len(v) for v in got.values()) == len(sent) + 1, 30, "every event")
            assert runner.dead_lettered == 0
    finally:
        producer.close()
    for ev in sent:
        spec = spec_of(ev)
        recs = [r for r in got[topics.name(spec)] if r.value is not None]
        assert [r.value for r in recs] == [ev]
        assert recs[0].key == str(getattr(ev, spec.key))
    tomb = [r for r in got[topics.name(CATALOG_ITEMS)] if r.value is None]
    assert [(t.key, t.value) for t in tomb] == [("gone", None)]


def test_an_old_version_message_is_decoded_by_the_new_reader(settings_factory, topics, group_id):
    """Exists because producers upgrade one at a time: a v1 Interaction written by an old producer
    must reach a new consumer as a current Interaction with v2's defaults filled in."""
    settings = settings_factory()
    v1 = schema_store().versions["recmesh.events.Interaction"][0]
    assert v1.version == 1

    buf = io.BytesIO()
    buf.write(MAGIC + v1.fingerprint)
    rec = {"event_id": "old-1", "user_id": "u1", "item_id": "i1", "event_type": "rating", "value": 4.0,
           "timestamp": 1_600_000_000_000, "session_id": "s", "request_id": None, "context": {"a": "b"},
           "tenant": "t"}  # fmt: skip
    fastavro.schemaless_writer(buf, v1.parsed, rec)
    got: list[Any] = []
    producer = EventProducer(settings.kafka, topics, client_id="v1")
    producer.produce_raw(topics.name(INTERACTIONS), buf.getvalue(), b"u1")
    assert producer.flush(10) == 0
    producer.close()
    runner = ConsumerRunner(settings.kafka, topics, group_id, [Subscription(INTERACTIONS, lambda rs: got.extend(rs))])
    with Running(runner):
        wait_for(lambda: len(got) == 1, 20, "the v1 message")
    assert got[0].value == Interaction("old-1", "u1", "i1", "rating", 4.0, 1_600_000_000_000, "s", None, {"a": "b"},
                                       "t", source="api")  # fmt: skip


# -- failures ---------------------------------------------------------------------------------------
def test_poison_messages_are_dead_lettered_and_the_stream_goes_on(settings_factory, topics, group_id, kafka_bootstrap,
                                                                  admin):  # fmt: skip
    """Exists because one bad message must never stall a partition: undecodable bytes, an unknown
    schema fingerprint and an event whose handler keeps raising go to the DLQ with the error headers,
    everything around them is processed, and the offsets move past them."""
    settings = settings_factory(kafka={"max_retries": 1})
    tenant = settings.tenant
    good = [interaction("u1", tenant) for _ in range(15)]
    boom = interaction("u1", tenant, session_id="boom")
    poison = [b"\x00\x01not avro at all" + random.randbytes(20), MAGIC + b"\xee" * 8 + b"\x02xx"]
    topic = topics.name(INTERACTIONS)
    producer = EventProducer(settings.kafka, topics, client_id="poison")
    # One key: one partition, in this order, so the poison sits between good events.
    for ev in good[:5]:
        producer.send(INTERACTIONS, ev)
    for raw in poison:
        producer.produce_raw(topic, raw, b"u1")
    for ev in good[5:10] + [boom] + good[10:]:
        producer.send(INTERACTIONS, ev)
    assert producer.flush(10) == 0
    producer.close()

    processed: list[str] = []

    def handler(records: list[Record[Interaction]]) -> None:
        if any(r.value is not None and r.value.session_id == "boom" for r in records):
            raise ValueError("cannot handle this one")
        processed.extend(r.value.event_id for r in records if r.value is not None)

    runner = ConsumerRunner(settings.kafka, topics, group_id, [Subscription(INTERACTIONS, handler)])
    with Running(runner):
        wait_for(lambda: len(processed) >= len(good) and runner.dead_lettered == 3, 30, "good events and 3 DLQs")
    assert sorted(processed) == sorted(e.event_id for e in good)
    assert sum(max(o, 0) for o in committed(admin, group_id, topic).values()) == len(good) + 3, "past the poison"

    letters = read_all(kafka_bootstrap, topics.dlq(INTERACTIONS), 3)
    assert len(letters) == 3
    by_class = Counter()
    for msg in letters:
        h = {k: v.decode() for k, v in msg.headers()}
        assert {"error", "error_class", "source_topic", "source_partition", "source_offset"} <= set(h)
        assert h["source_topic"] == topic and h["error"]
        assert msg.key() == b"u1"
        by_class[h["error_class"]] += 1
        src = read_at(kafka_bootstrap, topic, int(h["source_partition"]), int(h["source_offset"]))
        assert src == msg.value(), "the DLQ must carry the original bytes"
    assert by_class == {"DecodeError": 2, "ValueError": 1}
    assert {m.value() for m in letters} >= set(poison)


def read_at(kafka_bootstrap: str, topic: str, partition: int, offset: int) -> bytes | None:
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": new_id(), "enable.auto.commit": False})
    c.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is not None and msg.error() is None:
                return msg.value()
        raise AssertionError(f"nothing at {topic}[{partition}]@{offset}")
    finally:
        c.close()


@pytest.mark.parametrize("error", [TransientError("redis down"), redis.exceptions.ConnectionError("refused")],
                         ids=["TransientError", "redis-ConnectionError"])  # fmt: skip
def test_transient_failures_are_retried_and_never_committed_past(settings_factory, topics, group_id, admin, error):
    """Exists because a dependency outage must delay, not lose, events: the batch is retried with
    backoff, the committed offset stays put while it fails, and each effect lands exactly once."""
    settings = settings_factory(kafka={"max_retries": 0})  # transient errors must not count as retries
    tenant = settings.tenant
    topic = topics.name(INTERACTIONS)
    warm = [interaction("u1", tenant) for _ in range(5)]
    flaky = [interaction("u1", tenant, session_id="flaky") for _ in range(5)]
    applied: Counter[str] = Counter()
    failures: list[dict[int, int]] = []

    def handler(records: list[Record[Interaction]]) -> None:
        if any(r.value is not None and r.value.session_id == "flaky" for r in records) and len(failures) < 3:
            failures.append(committed(admin, group_id, topic))
            raise error
        applied.update(r.value.event_id for r in records if r.value is not None)

    producer = EventProducer(settings.kafka, topics, client_id="flaky")
    runner = ConsumerRunner(settings.kafka, topics, group_id, [Subscription(INTERACTIONS, handler)])
    try:
        with Running(runner):
            for ev in warm:
                producer.send(INTERACTIONS, ev)
            assert producer.flush(10) == 0
            wait_for(lambda: sum(max(o, 0) for o in committed(admin, group_id, topic).values()) == 5, 20,
                     "the warm-up commit", every=0.1)  # fmt: skip
            for ev in flaky:
                producer.send(INTERACTIONS, ev)
            assert producer.flush(10) == 0
            wait_for(lambda: sum(max(o, 0) for o in committed(admin, group_id, topic).values()) == 10, 20,
                     "the commit after recovery", every=0.1)  # fmt: skip
    finally:
        producer.close()
    assert len(failures) == 3
    assert all(sum(max(o, 0) for o in seen.values()) == 5 for seen in failures), failures
    assert applied == Counter({e.event_id: 1 for e in warm + flaky})
    assert runner.dead_lettered == 0


# -- exactly-once effects across a crash ------------------------------------------------------------
@pytest.mark.timeout(150)
def test_no_loss_no_double_effect_across_sigkill(settings_factory, topics, group_id, tenant, redis_client,
                                                 kafka_bootstrap, redis_url, admin, tmp_path):  # fmt: skip
    """Exists because at-least-once delivery + Redis effects must add up to exactly once: a consumer
    process is SIGKILLed mid-stream (once from outside at a random point, once right after its Redis
    transaction but before the offset commit) and restarted; every one of 20,000 events is counted once."""
    settings = settings_factory()
    n_events, n_users = 20_000, 200
    rng = random.Random(7)
    events = [Interaction(f"ev{i}", f"u{rng.randrange(n_users)}", "i1", "view", None, 1_700_000_000_000 + i,
                          tenant=tenant) for i in range(n_events)]  # fmt: skip
    expected = Counter(e.user_id for e in events)
    producer = EventProducer(settings.kafka, topics, client_id="sigkill")
    for ev in events:
        producer.send(INTERACTIONS, ev)
    assert producer.flush(30) == 0
    producer.close()
    topic = topics.name(INTERACTIONS)
    ends = end_offsets(kafka_bootstrap, topic)
    assert sum(ends.values()) == n_events

    total_key, user_prefix, skipped_key = counter_keys(tenant)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECMESH_")}
    env.update({
        "RECMESH_ENV": "test", "RECMESH_TENANT": tenant, "RECMESH_LOG_JSON": "false",
        "RECMESH_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap, "RECMESH_KAFKA__TOPIC_PREFIX": topics.prefix,
        "RECMESH_KAFKA__CONSUMER_BATCH_SIZE": "250", "RECMESH_REDIS__URL": redis_url, "WORKER_GROUP": group_id,
        "PYTHONPATH": str(ROOT), "WORKER_INSTANCE_ID": f"{group_id}-0",
    })  # fmt: skip

    def total() -> int:
        return int(redis_client.get(total_key) or 0)

    def start(**extra: str) -> subprocess.Popen[bytes]:
        with (tmp_path / f"worker-{time.monotonic_ns()}.log").open("wb") as log:
            return subprocess.Popen([sys.executable, str(WORKER)], env={**env, **extra}, stdout=log, stderr=log,
                                    cwd=ROOT)  # fmt: skip

    t0 = time.monotonic()
    phases: list[tuple[str, float]] = []
    try:
        # 1. Killed from outside while it works.
        p = start(WORKER_DELAY_S="0.02")
        wait_for(lambda: total() >= 2_000 or p.poll() is not None, 60, "the first worker to make progress")
        p.send_signal(signal.SIGKILL)
        assert p.wait(10) == -signal.SIGKILL
        first = total()
        assert 0 < first < n_events, f"the kill must land mid-stream (total {first})"
        phases.append(("external kill", time.monotonic() - t0))

        # 2. Kills itself after its transaction, before the commit: that batch is redelivered.
        p = start(WORKER_CRASH_AFTER=str(first + 5_000))
        assert p.wait(60) == -signal.SIGKILL
        assert first + 5_000 <= total() < n_events
        phases.append(("self kill", time.monotonic() - t0))

        # 3. Runs to the end and stops gracefully.
        p = start()
        wait_for(lambda: total() >= n_events and committed(admin, group_id, topic) == ends, 60,
                 "the last worker to catch up", every=0.1)  # fmt: skip
        phases.append(("caught up", time.monotonic() - t0))
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    finally:
        sys.stdout.write(f"phases: {phases}\n")
        if p.poll() is None:
            p.kill()
            p.wait(5)
        for log in tmp_path.glob("worker-*.log"):
            sys.stdout.write(log.read_text()[-2000:])

    assert total() == n_events
    users = {k.decode()[len(user_prefix):]: int(v) for k, v in
             zip(redis_client.keys(user_prefix + "*"), redis_client.mget(redis_client.keys(user_prefix + "*")),
                 strict=True)}  # fmt: skip
    assert users == dict(expected)
    assert int(redis_client.get(skipped_key) or 0) > 0, "the post-transaction crash must cause a deduped replay"
    markers = list(redis_client.scan_iter(match=f"{Keys(tenant).p}:dd:*", count=5000))
    assert len(markers) == n_events
    for i in range(0, len(markers), 5000):  # faster than the fixture's key-by-key cleanup
        redis_client.unlink(*markers[i : i + 5000])


# -- consumer groups --------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_two_consumers_split_partitions_and_the_survivor_takes_over(settings_factory, topics, group_id):
    """Exists because services scale out by consumer group: two runners share the partitions, and
    when one stops the other takes its partitions and processes everything that follows."""
    settings = settings_factory()
    tenant = settings.tenant
    topic = topics.name(INTERACTIONS)
    seen: dict[str, list[tuple[int, str]]] = {"a": [], "b": []}

    def handler_for(name: str) -> Callable[[list[Record[Interaction]]], None]:
        def handle(records: list[Record[Interaction]]) -> None:
            seen[name].extend((r.partition, r.value.event_id) for r in records if r.value is not None)

        return handle

    a = ConsumerRunner(settings.kafka, topics, group_id, [Subscription(INTERACTIONS, handler_for("a"))],
                       client_id="a")  # fmt: skip
    b = ConsumerRunner(settings.kafka, topics, group_id, [Subscription(INTERACTIONS, handler_for("b"))],
                       client_id="b")  # fmt: skip
    producer = EventProducer(settings.kafka, topics, client_id="split")
    all_ids: set[str] = set()

    def produce(n: int) -> None:
        for i in range(n):
            ev = interaction(f"user{i}", tenant)
            all_ids.add(ev.event_id)
            producer.send(INTERACTIONS, ev)
        assert producer.flush(10) == 0

    def ids(*names: str) -> set[str]:
        return {e for n in names for _, e in seen[n]}

    try:
        with Running(b):
            ta = a.start_thread()
            wait_for(lambda: len(a.assigned) == 1 and len(b.assigned) == 1, 30, "one partition each", every=0.05)
            assert a.assigned | b.assigned == {(topic, 0), (topic, 1)}
            pa = next(iter(a.assigned))[1]
            produce(300)
            wait_for(lambda: ids("a", "b") == all_ids, 30, "both consumers to process phase 1")
            assert {p for p, _ in seen["a"]} == {pa} and {p for p, _ in seen["b"]} == {1 - pa}
            a.stop()
            ta.join(20)
            assert not ta.is_alive()
            wait_for(lambda: len(b.assigned) == 2, 30, "the survivor to take both partitions", every=0.05)
            produce(300)
            wait_for(lambda: ids("a", "b") == all_ids, 30, "the survivor to process phase 2")
            assert {p for p, _ in seen["b"]} == {0, 1}
    finally:
        producer.close()
    assert len(all_ids) == 600 and ids("a", "b") == all_ids


# -- producer ---------------------------------------------------------------------------------------
def test_send_batch_async_reports_each_event(settings_factory, topics):
    """Exists because ingestion answers HTTP only after the broker acknowledged: each event gets None
    (acknowledged) or its error, and an invalid event does not sink the batch."""
    import asyncio

    settings = settings_factory()
    producer = EventProducer(settings.kafka, topics, client_id="async").start()
    good = [interaction("u1", settings.tenant) for _ in range(20)]
    bad = Interaction("x", "u1", "i1", "not-an-event-type", None, 1)
    try:
        res = asyncio.run(producer.send_batch_async(INTERACTIONS, [*good[:10], bad, *good[10:]]))
    finally:
        producer.close()
    assert res[:10] == [None] * 10 and res[11:] == [None] * 10
    assert res[10] is not None and "invalid event" in res[10]


def test_a_full_local_queue_is_backpressure_not_a_block(kafka_bootstrap, topics):
    """Exists because callers must be told to slow down instead of hanging when the queue is full."""
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, producer_queue_max_messages=5)  # type: ignore[call-arg]
    producer = EventProducer(kafka, topics, client_id="bp", extra_config={"linger.ms": 5000})
    try:
        for _ in range(5):
            producer.send(CATALOG_ITEMS, ItemUpdate(new_id(), updated_at=1))
        t0 = time.monotonic()
        with pytest.raises(Backpressure):
            producer.send(CATALOG_ITEMS, ItemUpdate(new_id(), updated_at=1))
        assert time.monotonic() - t0 < 1.0
        assert producer.queue_depth() == 5
    finally:
        producer.close(10)


# -- idempotency helper -----------------------------------------------------------------------------
def test_deduper_apply_is_exact_when_consumers_race(redis_client, tenant):
    """Exists because during a rebalance two consumers can hold the same events for a moment:
    Deduper.apply (WATCH + MULTI/EXEC) still applies each event's effect once."""
    keys = Keys(tenant)
    ids = [(f"e{i}", tenant) for i in range(200)]
    counter = f"{keys.p}:test:race"
    errors: list[BaseException] = []

    def worker() -> None:
        d = Deduper(redis.Redis(connection_pool=redis_client.connection_pool), "race", 600, keys)
        try:
            for i in range(0, len(ids), 20):
                chunk = ids[i : i + 20]
                d.apply(chunk, lambda pipe, fresh: pipe.incrby(counter, sum(fresh)) if any(fresh) else None)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert int(redis_client.get(counter)) == len(ids)
    assert Deduper(redis_client, "race", 600, keys).unseen(ids) == [False] * len(ids)
