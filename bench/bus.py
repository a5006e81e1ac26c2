"""Event-bus throughput: Avro codec vs JSON, EventProducer vs raw confluent-kafka, consume+decode.

Starts its own Kafka broker on 29092 (``RECMESH_TEST_KAFKA_PORT``) unless ``RECMESH_TEST_KAFKA``
names a running one, creates fresh topics, and measures in the same run:

* codec: ``AvroCodec`` encode/decode of Interaction (single-object encoding, typed objects in
  and out) vs an orjson baseline doing the same job (dataclass → bytes → dataclass);
* produce: ``EventProducer.send`` (encode + keyed idempotent produce, until every message is
  acknowledged) vs a bare confluent-kafka ``Producer`` with the *same* config sending the same
  pre-encoded bytes → ``ratio_vs_raw``;
* consume: ``ConsumerRunner`` (poll + decode + handler + commit per batch) vs a bare
  ``Consumer.consume`` loop over the same messages without decoding.

Each throughput is the best of ``BENCH_ROUNDS`` rounds. Writes ``bench/results/bus.json`` and
prints a table. Not a test; never gates anything.
"""

from __future__ import annotations

import gc
import os
import platform
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RECMESH_TEST_KAFKA_PORT", "29092")

from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from recmesh.core.bus import ConsumerRunner, EventProducer, Record, Subscription  # noqa: E402
from recmesh.core.codec import AvroCodec  # noqa: E402
from recmesh.core.errors import Backpressure  # noqa: E402
from recmesh.core.events import Interaction, from_record, to_record  # noqa: E402
from recmesh.core.settings import KafkaSettings  # noqa: E402
from recmesh.core.topics import INTERACTIONS, TopicRegistry  # noqa: E402
from tests.infra import start_kafka  # noqa: E402

N = int(os.environ.get("BENCH_EVENTS", "200000"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
OUT = ROOT / "bench" / "results" / "bus.json"
console = Console()


def make_events(n: int) -> list[Interaction]:
    types = ("view", "click", "add_to_cart", "purchase", "rating")
    return [
        Interaction(
            f"ev-{i:09d}",
            f"u{i % 5000}",
            f"i{i % 1700}",
            types[i % 5],
            4.0 if i % 5 == 4 else None,
            1_700_000_000_000 + i,
            f"s{i % 900}",
            None,
            {"page": "home", "device": "ios"},
            "shop1",
            "api",
        )  # fmt: skip
        for i in range(n)
    ]


# -- codec ----------------------------------------------------------------------------------------
def bench_codec(events: list[Interaction]) -> dict[str, float]:
    codec = AvroCodec(Interaction)
    encoded = [codec.encode(e) for e in events]
    jsoned = [orjson.dumps(to_record(e)) for e in events]

    def rate(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter()
        fn()
        return len(events) / (time.perf_counter() - t0)

    jobs: dict[str, Callable[[], object]] = {
        "avro_encode_per_s": lambda: [codec.encode(e) for e in events],
        "json_encode_per_s": lambda: [orjson.dumps(to_record(e)) for e in events],
        "avro_decode_per_s": lambda: [codec.decode(b) for b in encoded],
        "json_decode_per_s": lambda: [from_record(Interaction, orjson.loads(b)) for b in jsoned],
    }
    out = dict.fromkeys(jobs, 0.0)
    for _ in range(max(ROUNDS, 3)):  # interleaved rounds: load drift on a shared machine hits all alike
        for name, job in jobs.items():
            out[name] = max(out[name], rate(job))
    out["avro_bytes_per_event"] = sum(map(len, encoded)) / len(encoded)
    out["json_bytes_per_event"] = sum(map(len, jsoned)) / len(jsoned)
    out["encode_ratio_vs_json"] = out["avro_encode_per_s"] / out["json_encode_per_s"]
    out["decode_ratio_vs_json"] = out["avro_decode_per_s"] / out["json_decode_per_s"]
    return out


# -- produce --------------------------------------------------------------------------------------
def produce_raw(config: dict[str, Any], topic: str, payloads: list[tuple[bytes, bytes]]) -> float:
    p = Producer(config)
    t0 = time.perf_counter()
    for v, k in payloads:
        while True:
            try:
                p.produce(topic, v, k)
                break
            except BufferError:
                p.poll(0.005)
    left = p.flush(120)
    dt = time.perf_counter() - t0
    assert left == 0, f"{left} raw messages undelivered"
    return len(payloads) / dt


def produce_ours(kafka: KafkaSettings, topics: TopicRegistry, events: list[Interaction]) -> float:
    producer = EventProducer(kafka, topics, client_id="bench").start()
    t0 = time.perf_counter()
    for ev in events:
        while True:
            try:
                producer.send(INTERACTIONS, ev)
                break
            except Backpressure:
                time.sleep(0.005)
    left = producer.flush(120)
    dt = time.perf_counter() - t0
    producer.close(10)
    assert left == 0, f"{left} messages undelivered"
    return len(events) / dt


def bench_produce(kafka: KafkaSettings, topics: TopicRegistry, events: list[Interaction]) -> dict[str, float]:
    probe = EventProducer(kafka, topics, client_id="bench-probe")
    config = probe.config  # the very config EventProducer runs with
    payloads = [(probe.encode(INTERACTIONS, e), e.user_id.encode()) for e in events]
    probe.close(1)
    topic = topics.name(INTERACTIONS)
    raw, ours = 0.0, 0.0
    for _ in range(ROUNDS):  # interleaved so drift hits both alike
        raw = max(raw, produce_raw(config, topic, payloads))
        ours = max(ours, produce_ours(kafka, topics, events))
    return {"raw_events_per_s": raw, "producer_events_per_s": ours, "ratio_vs_raw": ours / raw}


# -- consume --------------------------------------------------------------------------------------
def consume_raw(kafka: KafkaSettings, topic: str, n: int) -> float:
    c = Consumer({**kafka.client_config(), "group.id": f"bench-raw-{uuid.uuid4().hex}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 50})  # fmt: skip
    c.subscribe([topic])
    got = 0
    t0 = 0.0
    try:
        while got < n:
            msgs = c.consume(kafka.consumer_batch_size, 1.0)
            if msgs and not t0:
                t0 = time.perf_counter()
            got += sum(1 for m in msgs if m.error() is None)
            if msgs:
                c.commit(asynchronous=False)
        return n / (time.perf_counter() - t0)
    finally:
        c.close()


def consume_runner(kafka: KafkaSettings, topics: TopicRegistry, n: int) -> float:
    done = threading.Event()
    state = {"count": 0, "t0": 0.0}

    def handler(records: list[Record[Interaction]]) -> None:
        if not state["t0"]:
            state["t0"] = time.perf_counter()
        state["count"] += len(records)
        if state["count"] >= n:
            done.set()

    runner = ConsumerRunner(kafka, topics, f"bench-runner-{uuid.uuid4().hex}", [Subscription(INTERACTIONS, handler)])
    t = runner.start_thread()
    assert done.wait(300), f"runner consumed only {state['count']} of {n}"
    dt = time.perf_counter() - state["t0"]
    runner.stop()
    t.join(30)
    return n / dt


def bench_consume(kafka: KafkaSettings, topics: TopicRegistry, n: int) -> dict[str, float]:
    topic = topics.name(INTERACTIONS)
    raw, ours = 0.0, 0.0
    for _ in range(ROUNDS):
        raw = max(raw, consume_raw(kafka, topic, n))
        ours = max(ours, consume_runner(kafka, topics, n))
    return {"raw_consume_per_s": raw, "runner_consume_decode_per_s": ours, "ratio_vs_raw": ours / raw}


def main() -> None:
    events = make_events(N)
    console.print(f"[bold]bench bus[/bold]: {N} Interaction events, best of {ROUNDS}")
    codec = bench_codec(events)
    svc = start_kafka()
    try:
        kafka = KafkaSettings(bootstrap_servers=svc.address)  # type: ignore[call-arg]
        topics = TopicRegistry(prefix=f"bench-{uuid.uuid4().hex[:8]}.")
        admin = AdminClient(kafka.client_config())
        topics.ensure(admin)
        try:
            produce = bench_produce(kafka, topics, events)
            consume = bench_consume(kafka, topics, N)
        finally:
            topics.delete_all(admin)
            gc.collect()  # closed clients hold librdkafka handles until collected; drop them first
    finally:
        if svc.stop:
            svc.stop()
    result = {
        "events": N,
        "rounds": ROUNDS,
        "partitions": INTERACTIONS.partitions,
        "codec": codec,
        "produce": produce,
        "consume": consume,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "broker": "own" if svc.stop else "reused",
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))

    table = Table(title=f"bus throughput ({N} Interaction events, best of {ROUNDS})")
    for col in ("measure", "recmesh", "baseline", "ratio"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    table.add_row("encode rec/s (Avro vs orjson)", f"{codec['avro_encode_per_s']:,.0f}",
                  f"{codec['json_encode_per_s']:,.0f}", f"{codec['encode_ratio_vs_json']:.2f}")  # fmt: skip
    table.add_row("decode rec/s (Avro vs orjson)", f"{codec['avro_decode_per_s']:,.0f}",
                  f"{codec['json_decode_per_s']:,.0f}", f"{codec['decode_ratio_vs_json']:.2f}")  # fmt: skip
    table.add_row("bytes/event (Avro vs JSON)", f"{codec['avro_bytes_per_event']:.0f}",
                  f"{codec['json_bytes_per_event']:.0f}",
                  f"{codec['avro_bytes_per_event'] / codec['json_bytes_per_event']:.2f}")  # fmt: skip
    table.add_row("produce ev/s (EventProducer vs raw)", f"{produce['producer_events_per_s']:,.0f}",
                  f"{produce['raw_events_per_s']:,.0f}", f"{produce['ratio_vs_raw']:.2f}")  # fmt: skip
    table.add_row("consume+decode ev/s (runner vs raw)", f"{consume['runner_consume_decode_per_s']:,.0f}",
                  f"{consume['raw_consume_per_s']:,.0f}", f"{consume['ratio_vs_raw']:.2f}")  # fmt: skip
    console.print(table)
    console.print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
