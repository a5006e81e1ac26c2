"""Ingestion throughput: HTTP API vs the importer path vs the raw confluent-kafka producer.

Starts what it needs (a Kafka broker on 29192 and Redis on 26379 unless RECMESH_TEST_KAFKA /
RECMESH_TEST_REDIS name running ones), fresh topics, then measures in the same run:

* ``raw_produce_events_per_s``: a bare confluent-kafka Producer (``EventProducer``'s own config)
  sending pre-encoded Avro messages — the ceiling of this broker on this machine;
* ``direct_events_per_s``: the importer path (clean → encode → idempotent producer);
* ``http_events_per_s``: ``POST /v1/events`` with batches of 500 events (client event ids,
  so the Redis idempotency check is included) over keep-alive connections from a load
  process, against ``python -m recmesh.ingestion`` run by uvicorn with 1 and 2 workers.
  A 202 is only sent after Kafka acknowledged the batch, so this is end-to-end acked rate.

Writes ``bench/results/ingest.json`` and prints a table. Not a test; never gates anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RECMESH_TEST_KAFKA_PORT", "29192")
os.environ.setdefault("RECMESH_TEST_REDIS_PORT", "26379")

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient  # noqa: E402

from recmesh.core.bus import EventProducer  # noqa: E402
from recmesh.core.events import Interaction  # noqa: E402
from recmesh.core.settings import KafkaSettings  # noqa: E402
from recmesh.core.topics import INTERACTIONS, TopicRegistry  # noqa: E402
from recmesh.ingestion.cleaning import CleaningOptions  # noqa: E402
from recmesh.ingestion.importers import ProducerSink, RowsSource, run_import  # noqa: E402
from tests.infra import start_kafka, start_redis  # noqa: E402

BATCH = 500
RAW_N = int(os.environ.get("BENCH_RAW_EVENTS", "200000"))
DIRECT_N = int(os.environ.get("BENCH_DIRECT_EVENTS", "200000"))
HTTP_SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS", "10"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "8"))
console = Console(width=130)


def _event(i: int, run: str) -> dict:
    return {"event_id": f"{run}-{i}", "user_id": f"u{i % 5000}", "item_id": f"i{i % 1700}", "event_type": "click",
            "timestamp": 1_700_000_000_000 + i, "session_id": f"s{i % 900}", "context": {"page": "home"}}  # fmt: skip


def _count(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-count-{uuid.uuid4().hex}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        c.close()


def bench_raw(bootstrap: str, topics: TopicRegistry) -> float:
    """Pre-encoded Avro bytes through a bare confluent-kafka Producer (same delivery guarantees)."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    enc = EventProducer(kafka, topics, client_id="bench-raw")
    payloads = [
        (enc.encode(INTERACTIONS, Interaction(**{**_event(i, "raw"), "tenant": "bench"})), f"u{i % 5000}".encode())
        for i in range(5000)
    ]
    config = enc.config  # the very config EventProducer runs with (as bench/bus.py does)
    enc.close(1)
    p = Producer(config)
    topic = topics.name(INTERACTIONS)
    t0 = time.perf_counter()
    for i in range(RAW_N):
        v, k = payloads[i % 5000]
        while True:
            try:
                p.produce(topic, v, k)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10_000 == 0:
            p.poll(0)
    left = p.flush(120)
    dt = time.perf_counter() - t0
    assert left == 0
    del p  # destroy the client now, not when the broker is already gone
    return RAW_N / dt


def bench_direct(bootstrap: str, topics: TopicRegistry) -> float:
    """The importer path: rows → cleaning → Avro → idempotent EventProducer, until all are acked."""
    rows = [_event(i, "direct") for i in range(DIRECT_N)]
    producer = EventProducer(KafkaSettings(bootstrap_servers=bootstrap), topics, client_id="bench").start()
    t0 = time.perf_counter()
    result = run_import([RowsSource("bench", "interactions", rows)], ProducerSink(producer), CleaningOptions())
    dt = time.perf_counter() - t0
    producer.close(10)
    assert result.delivery == {"produced": DIRECT_N, "failed": 0}, result.delivery
    return DIRECT_N / dt


def _tree_cpu_s(root: int) -> float:
    """User+system CPU seconds of a process and all its descendants (from /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(d)] = int(fields[1])
        times[int(d)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == pid and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    return sum(times.get(p, 0.0) for p in tree)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _load(url: str, bodies: list[bytes], seconds: float, concurrency: int, pids: dict[str, int]) -> dict:
    """``concurrency`` keep-alive connections posting batches for ``seconds`` (after a 2 s warm-up)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    accepted = 0
    lat: list[float] = []
    errors = 0
    nxt = [0]
    measuring = [False]
    stop = [False]

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60,
                                 headers={"content-type": "application/json"}) as client:  # fmt: skip

        async def worker() -> None:
            nonlocal accepted, errors
            while not stop[0]:
                i = nxt[0]
                nxt[0] += 1
                if i >= len(bodies):
                    return
                t = time.perf_counter()
                r = await client.post("/v1/events", content=bodies[i])
                if r.status_code != 202:
                    errors += 1
                    await asyncio.sleep(0.1)
                    continue
                if measuring[0]:
                    accepted += r.json()["accepted"]
                    lat.append(time.perf_counter() - t)

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        await asyncio.sleep(2.0)
        measuring[0] = True
        cpu0 = {k: _tree_cpu_s(p) for k, p in pids.items()}
        client0 = time.process_time()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        measuring[0] = False
        dt = time.perf_counter() - t0
        cpu = {k: _tree_cpu_s(p) - cpu0[k] for k, p in pids.items()}
        cpu["client"] = time.process_time() - client0
        stop[0] = True
        await asyncio.gather(*tasks)
    lat.sort()
    return {"events_per_s": accepted / dt, "accepted": accepted, "errors": errors, "seconds": dt,
            **{f"{k}_cpu_us_per_event": (1e6 * v / accepted if accepted else None) for k, v in cpu.items()},
            "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
            "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else None}  # fmt: skip


def _infra_pids() -> dict[str, int]:
    """PIDs of the broker and Redis this benchmark started (unknown when reusing running ones)."""
    out = {}
    for name, pidfile in (
        ("broker", ROOT / ".local" / "test" / f"kafka-{os.environ['RECMESH_TEST_KAFKA_PORT']}" / "kafka.pid"),
        ("redis", ROOT / ".local" / "test" / f"redis-{os.environ['RECMESH_TEST_REDIS_PORT']}" / "redis.pid"),
    ):
        if name == "broker" and os.environ.get("RECMESH_TEST_KAFKA"):
            continue
        if name == "redis" and os.environ.get("RECMESH_TEST_REDIS"):
            continue
        with contextlib.suppress(OSError, ValueError):
            out[name] = int(pidfile.read_text().strip())
    return out


def bench_http(bootstrap: str, redis_url: str, topics: TopicRegistry, workers: int) -> dict:
    port = _free_port()
    env = {**os.environ, "RECMESH_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "RECMESH_KAFKA__TOPIC_PREFIX": topics.prefix,
           "RECMESH_REDIS__URL": redis_url, "RECMESH_HTTP__PORT": str(port), "RECMESH_HTTP__WORKERS": str(workers),
           "RECMESH_TENANT": "bench", "RECMESH_LOG_LEVEL": "WARNING", "RECMESH_ENV": "dev"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "recmesh.ingestion"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ingestion did not start: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            time.sleep(0.3)
        run = uuid.uuid4().hex[:8]
        n_bodies = int((HTTP_SECONDS + 4) * 60_000 / BATCH) + 50  # headroom up to 60k events/s
        bodies = [orjson.dumps([_event(b * BATCH + j, run) for j in range(BATCH)]) for b in range(n_bodies)]
        before = _count(bootstrap, topics.name(INTERACTIONS))
        pids = {"server": proc.pid, **_infra_pids()}
        out = asyncio.run(_load(url, bodies, HTTP_SECONDS, CONCURRENCY, pids))
        total = sum(v for k, v in out.items() if k.endswith("_cpu_us_per_event") and v)
        out["total_cpu_us_per_event"] = total
        # What the measured CPU cost per event allows on this many idle cores (a projection, not a measurement).
        out["projected_idle_events_per_s"] = (os.cpu_count() or 1) * 1e6 / total if total else None
        out["workers"] = workers
        out["topic_delta"] = _count(bootstrap, topics.name(INTERACTIONS)) - before
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    kafka = start_kafka()
    redis = start_redis()
    topics = TopicRegistry(prefix=f"bench-{uuid.uuid4().hex[:6]}.")
    admin = AdminClient({"bootstrap.servers": kafka.address})
    topics.ensure(admin)
    try:
        console.print(f"broker {kafka.address}, redis {redis.address}, {os.cpu_count()} cores")
        load_before = os.getloadavg()[0]
        raw = bench_raw(kafka.address, topics)
        console.print(f"raw producer: {raw:,.0f} events/s")
        direct = bench_direct(kafka.address, topics)
        console.print(f"importer path: {direct:,.0f} events/s")
        http_runs = {}
        for w in (1, 2):
            r = bench_http(kafka.address, redis.address, topics, w)
            http_runs[str(w)] = r
            console.print(f"HTTP, {w} worker(s): {r['events_per_s']:,.0f} events/s")
        best = max(http_runs.values(), key=lambda r: r["events_per_s"])
        result = {
            "http_events_per_s": round(best["events_per_s"], 1),
            "http_best_workers": best["workers"],
            "http_by_workers": {
                k: {kk: (round(vv, 2) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                for k, v in http_runs.items()
            },  # fmt: skip
            "direct_events_per_s": round(direct, 1),
            "raw_produce_events_per_s": round(raw, 1),
            "ratio_http_vs_raw": round(best["events_per_s"] / raw, 3),
            "ratio_direct_vs_raw": round(direct / raw, 3),
            "target_http_events_per_s": 20_000,
            "params": {
                "batch": BATCH,
                "concurrency": CONCURRENCY,
                "http_seconds": HTTP_SECONDS,
                "raw_events": RAW_N,
                "direct_events": DIRECT_N,
                "dedupe": True,
                "cores": os.cpu_count(),
                "python": platform.python_version(),
            },  # fmt: skip
            # Other processes on a shared machine skew absolute numbers; ratios are the comparable part.
            "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        }
        out = ROOT / "bench" / "results" / "ingest.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        t = Table(title="Ingestion throughput (events/s, broker-acknowledged)")
        for c in (
            "path",
            "events/s",
            "vs raw",
            "p50 ms",
            "p99 ms",
            "server CPU µs/ev",
            "all CPU µs/ev",
            "idle 2-core proj.",
        ):
            t.add_column(c, justify="left" if c == "path" else "right")
        t.add_row("raw confluent-kafka producer", f"{raw:,.0f}", "1.00", "", "", "", "", "")
        t.add_row("importer (clean+encode+produce)", f"{direct:,.0f}", f"{direct / raw:.2f}", "", "", "", "", "")
        for k, r in http_runs.items():
            t.add_row(f"HTTP POST /v1/events, {k} worker(s)", f"{r['events_per_s']:,.0f}",
                      f"{r['events_per_s'] / raw:.2f}", f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}",
                      f"{r['server_cpu_us_per_event']:.1f}", f"{r['total_cpu_us_per_event']:.1f}",
                      f"{r['projected_idle_events_per_s'] or 0:,.0f}")  # fmt: skip
        console.print(t)
        console.print(f"wrote {out.relative_to(ROOT)}")
    finally:
        topics.delete_all(admin)
        if redis.stop:
            redis.stop()
        if kafka.stop:
            kafka.stop()


if __name__ == "__main__":
    main()
