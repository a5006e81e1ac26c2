"""Freshness: how long from a click's ``202`` until that user's recommendations reflect it, under load.

The whole real-time path runs as processes: a real Kafka broker and Redis (``tests/infra``:
ports 29092/26380 unless ``RECMESH_TEST_KAFKA`` / ``RECMESH_TEST_REDIS`` name running ones),
``python -m recmesh.ingestion``, ``recmesh.personalization``, ``recmesh.feedback`` and
``recmesh.scoring`` on free ports, with a topic prefix and tenant of their own. The model is
an implicit ALS fitted here on MovieLens-100K (bench scripts may use anything) and registered
as the champion of ``als`` in a temporary registry.

A separate load process posts ≥ 1,000 events/s (ML-100K items, background users) through
ingestion. Then, for each trial: pick an ML-100K user, read their top-1 with
``exclude_seen=true``, ``POST /v1/events`` a click on it, and poll the recommendations every
5 ms until that item is gone. Reported: p50/p99/max ms from the ``202`` to the changed list.

Baseline (same run): the transport floor — the time from the same ``202`` until a raw
confluent-kafka consumer in this process sees that event on ``interactions.v1``. The ratio
says what the consumers + Redis + scoring add on top of Kafka itself. Consumer lag of both
services is sampled once a second from the broker (committed offsets vs high watermarks).

Writes ``bench/results/freshness.json`` and prints a table. Not a test; never gates anything.
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RECMESH_TEST_KAFKA_PORT", "29092")
os.environ.setdefault("RECMESH_TEST_REDIS_PORT", "26380")

TRIALS = int(os.environ.get("BENCH_TRIALS", "250"))
LOAD_RATE = float(os.environ.get("BENCH_LOAD_RATE", "1200"))
POLL_S = 0.005
TRIAL_TIMEOUT_S = float(os.environ.get("BENCH_TRIAL_TIMEOUT_S", "2.0"))
IDLE_TRIALS = int(os.environ.get("BENCH_IDLE_TRIALS", "30"))
TARGET_P50_MS, TARGET_P99_MS = 50.0, 250.0
OUT = ROOT / "bench" / "results" / "freshness.json"
DATA = ROOT / ".cache" / "data" / "ml-100k" / "ml-100k.inter"
MARKER_LEN = len("fresh-") + 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


# ------------------------------------------------------------------------------ model
def load_ml100k() -> list[tuple[str, str, float, int]]:
    if not DATA.exists():
        subprocess.run([str(ROOT / "infra" / "data" / "ml100k.sh")], check=True, stdout=subprocess.DEVNULL)
    rows = []
    with open(DATA) as fh:
        next(fh)
        for line in fh:
            u, i, r, t = line.rstrip("\n").split("\t")
            rows.append((u, i, float(r), int(float(t)) * 1000))
    return rows


def fit_als(rows: list[tuple[str, str, float, int]], registry_uri: str) -> tuple[str, list[str]]:
    """implicit ALS on ML-100K (binary), registered as champion of ``als``; returns (version, users)."""
    import numpy as np
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    from recmesh.core.artifacts import ModelArtifact
    from recmesh.core.registry import Registry, VersionInfo, new_version

    users = sorted({r[0] for r in rows}, key=int)
    items = sorted({r[1] for r in rows}, key=int)
    uix = {u: n for n, u in enumerate(users)}
    iix = {i: n for n, i in enumerate(items)}
    m = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), ([uix[r[0]] for r in rows], [iix[r[1]] for r in rows])),
        shape=(len(users), len(items)),
    )
    reg, alpha = 0.05, 2.0
    model = AlternatingLeastSquares(factors=32, regularization=reg, alpha=alpha, iterations=12, random_state=1)
    model.fit(m, show_progress=False)
    art = ModelArtifact(
        name="als", kind="vectors", item_ids=items, popularity=np.asarray(m.sum(axis=0)).ravel(),
        item_vectors=np.asarray(model.item_factors, dtype=np.float32), user_ids=users,
        user_vectors=np.asarray(model.user_factors, dtype=np.float32),
        encoder={"type": "als_fold_in", "regularization": reg, "alpha": alpha},
        data_range={"min_timestamp": min(r[3] for r in rows), "max_timestamp": max(r[3] for r in rows)},
    )  # fmt: skip
    registry = Registry(registry_uri)
    version = new_version()
    uri = registry.version_uri("als", version)
    art.save(uri)
    registry.register(VersionInfo("als", version, uri, status="challenger", kind="vectors"))
    registry.set_champion("als", version)
    return version, users


# ------------------------------------------------------------------------------ processes
def start_service(module: str, env: dict[str, str], port: int, logs: Path) -> subprocess.Popen[bytes]:
    with open(logs / f"{module.rsplit('.', 1)[-1]}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", module], env=env, cwd=str(ROOT),
                                stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip


def wait_ready(procs: dict[str, tuple[subprocess.Popen[bytes], int]], timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    pending = dict(procs)
    while pending:
        for name, (proc, port) in list(pending.items()):
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout}s: {sorted(pending)}")
        time.sleep(0.3)


def load_process(url: str, rate: float, items: list[str], seconds: float, out_path: str) -> None:
    """Background load (its own process): batches of 20 events, paced to ``rate`` events/s."""
    import httpx

    rng = random.Random(7)
    batch = 20
    period = batch / rate
    accepted = errors = 0
    t0 = time.perf_counter()
    nxt = t0
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    types = ["view", "view", "click", "click", "add_to_cart", "purchase", "like"]
    with httpx.Client(base_url=url, timeout=10, headers={"content-type": "application/json"}) as client:
        while not stop[0] and time.perf_counter() - t0 < seconds:
            body = json.dumps([{"user_id": f"bg{rng.randrange(20_000)}", "item_id": rng.choice(items),
                                "event_type": rng.choice(types)} for _ in range(batch)])  # fmt: skip
            try:
                r = client.post("/v1/events", content=body)
                if r.status_code == 202:
                    accepted += r.json().get("accepted", batch)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            nxt += period
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    dt = time.perf_counter() - t0
    Path(out_path).write_text(json.dumps({"accepted": accepted, "errors": errors, "seconds": dt}))


# ------------------------------------------------------------------------------ measurement
class TransportProbe:
    """A raw confluent-kafka consumer noting when each trial event id reaches ``interactions.v1``."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Consumer

        self.c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fresh-probe-{uuid.uuid4().hex[:8]}",
                           "auto.offset.reset": "latest", "enable.auto.commit": False,
                           "fetch.wait.max.ms": 5})  # fmt: skip
        self.c.subscribe([topic], on_assign=lambda c, p: self.ready.set())
        self.seen: dict[bytes, float] = {}
        self.ready = threading.Event()
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for msg in self.c.consume(500, 0.005):
                value = msg.value() if msg.error() is None else None
                i = value.find(b"fresh-") if value else -1
                if i >= 0:
                    self.seen[value[i : i + MARKER_LEN]] = time.perf_counter()
        self.c.close()

    def arrival(self, marker: bytes) -> float | None:
        return self.seen.get(marker)

    def stop(self) -> None:
        self._stop.set()
        self.t.join(10)


class SeenProbe:
    """When feedback's seen write for a trial user lands in Redis (keyspace notifications, pushed).

    Splits the path in two: transport + the seen fast lane (202 → the ZADD in Redis) and scoring
    reading it (Redis → the changed list). Notifications cost Redis nothing measurable at this rate.
    """

    def __init__(self, url: str, tenant: str) -> None:
        import redis as redis_lib

        from recmesh.core.store import Keys

        self.keys = Keys(tenant)
        self.r = redis_lib.Redis.from_url(url)
        self.r.config_set("notify-keyspace-events", "Kz")
        db = self.r.connection_pool.connection_kwargs.get("db", 0)
        self.prefix = f"__keyspace@{db}__:"
        self.ps = self.r.pubsub(ignore_subscribe_messages=True)
        self.ps.psubscribe(f"{self.prefix}{self.keys.seen('*')}")
        self.events: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msg = self.ps.get_message(timeout=0.05)
            if msg and msg.get("data") == b"zadd":
                self.events.setdefault(msg["channel"].decode()[len(self.prefix) :], []).append(time.perf_counter())
        self.ps.close()
        self.r.close()

    def written_after(self, user: str, t0: float) -> float | None:
        return next((t for t in self.events.get(self.keys.seen(user), []) if t >= t0), None)

    def stop(self) -> None:
        self._stop.set()
        self.t.join(10)


class LagSampler:
    """Consumer lag of the services' groups (high watermark − committed), sampled every second."""

    def __init__(self, bootstrap: str, topic: str, groups: list[str]) -> None:
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.meta = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fresh-lag-{uuid.uuid4().hex[:6]}"})
        self.topic, self.groups = topic, groups
        self.samples: dict[str, list[int]] = {g: [] for g in groups}
        self._stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _lag(self, group: str) -> int:
        from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

        res = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(5)
        lag = 0
        for tp in res.topic_partitions:
            if tp.topic != self.topic:
                continue
            _, high = self.meta.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=5)
            lag += max(0, high - max(tp.offset, 0))
        return lag

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for g in self.groups:
                try:
                    self.samples[g].append(self._lag(g))
                except Exception:  # a sample is best effort
                    continue

    def stop(self) -> None:
        self._stop.set()
        self.t.join(10)
        self.meta.close()


def run_trials(
    ing_url: str, score_url: str, users: list[str], probe: TransportProbe, seen: SeenProbe, trials: int, seed: int
) -> dict[str, Any]:
    import httpx

    rng = random.Random(seed)
    fresh: list[float] = []
    transport: list[float] = []
    seen_ms: list[float] = []
    polls: list[int] = []
    timeouts = 0
    skipped = 0
    with httpx.Client(timeout=5) as ing, httpx.Client(base_url=score_url, timeout=5) as sc:
        for _ in range(trials):
            user = rng.choice(users)
            path = f"/v1/users/{user}/recommendations"
            params = {"k": 10, "exclude_seen": "true"}
            r = sc.get(path, params=params)
            items = [x["item_id"] for x in r.json().get("items", [])] if r.status_code == 200 else []
            if not items:
                skipped += 1
                continue
            top1 = items[0]
            marker = f"fresh-{uuid.uuid4().hex}"  # the trial's event id, found by the transport probe
            body = [{"user_id": user, "item_id": top1, "event_type": "click", "event_id": marker}]
            resp = ing.post(f"{ing_url}/v1/events", json=body)
            t202 = time.perf_counter()
            if resp.status_code != 202:
                skipped += 1
                continue
            n = 0
            changed = None
            while time.perf_counter() - t202 < TRIAL_TIMEOUT_S:
                n += 1
                r = sc.get(path, params=params)
                got = [x["item_id"] for x in r.json().get("items", [])] if r.status_code == 200 else [top1]
                if top1 not in got:
                    changed = time.perf_counter()
                    break
                due = t202 + n * POLL_S
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if changed is None:
                timeouts += 1
            else:
                fresh.append(1000 * (changed - t202))
                polls.append(n)
            arrived = probe.arrival(marker.encode())
            if arrived is not None:
                transport.append(1000 * (arrived - t202))
            time.sleep(0.02)
            written = seen.written_after(user, t202)
            if written is not None:
                seen_ms.append(1000 * (written - t202))
    return {"fresh_ms": fresh, "transport_ms": transport, "seen_ms": seen_ms, "polls": polls, "timeouts": timeouts,
            "skipped": skipped}  # fmt: skip


# ------------------------------------------------------------------------------ main
def main() -> None:  # noqa: C901 - one linear script
    from confluent_kafka.admin import AdminClient
    from rich.console import Console
    from rich.table import Table

    from recmesh.core.topics import INTERACTIONS, TopicRegistry
    from tests.infra import start_kafka, start_redis

    console = Console()
    kafka, redis = start_kafka(), start_redis()
    run = uuid.uuid4().hex[:6]
    topics = TopicRegistry(prefix=f"fresh-{run}.")
    admin = AdminClient({"bootstrap.servers": kafka.address})
    topics.ensure(admin)
    tenant = f"fresh{run}"
    work = Path(tempfile.mkdtemp(prefix="recmesh-fresh-"))
    registry = str(work / "registry")
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    load: subprocess.Popen[bytes] | None = None
    probe = lag = seen = None
    try:
        console.print(f"broker {kafka.address}, redis {redis.address}, {os.cpu_count()} cores; fitting ALS on ML-100K")
        rows = load_ml100k()
        version, users = fit_als(rows, registry)
        items = sorted({r[1] for r in rows})
        base = {
            **os.environ, "RECMESH_ENV": "dev", "RECMESH_TENANT": tenant, "RECMESH_LOG_LEVEL": "WARNING",
            "RECMESH_KAFKA__BOOTSTRAP_SERVERS": kafka.address, "RECMESH_KAFKA__TOPIC_PREFIX": topics.prefix,
            "RECMESH_KAFKA__PRODUCER_LINGER_MS": "1", "RECMESH_KAFKA__CONSUMER_POLL_TIMEOUT_S": "0.005",
            "RECMESH_REDIS__URL": redis.address, "RECMESH_REGISTRY__URI": registry,
            "RECMESH_SCORING__MODELS": '["als"]', "RECMESH_SCORING__IMPRESSIONS": "false",
            "RECMESH_SCORING__GRPC_PORT": str(free_port()),
            "RECMESH_FEEDBACK__GROUP_ID": f"fresh-{run}-feedback",
            "RECMESH_PERSONALIZATION__GROUP_ID": f"fresh-{run}-personalization",
        }  # fmt: skip
        for module in ("recmesh.ingestion", "recmesh.personalization", "recmesh.feedback", "recmesh.scoring"):
            port = free_port()
            procs[module] = (start_service(module, {**base, "RECMESH_HTTP__PORT": str(port)}, port, work), port)
        wait_ready(procs)
        ing_url = f"http://127.0.0.1:{procs['recmesh.ingestion'][1]}"
        score_url = f"http://127.0.0.1:{procs['recmesh.scoring'][1]}"
        probe = TransportProbe(kafka.address, topics.name(INTERACTIONS))
        probe.ready.wait(30)
        seen = SeenProbe(redis.address, tenant)
        lag = LagSampler(kafka.address, topics.name(INTERACTIONS),
                         [f"fresh-{run}-feedback", f"fresh-{run}-feedback-seen",
                          f"fresh-{run}-personalization"])  # fmt: skip
        console.print(f"{IDLE_TRIALS} trials without background load")
        idle = run_trials(ing_url, score_url, users, probe, seen, IDLE_TRIALS, seed=5)
        load_out = work / "load.json"
        load = subprocess.Popen([sys.executable, __file__, "--load", ing_url, str(LOAD_RATE), str(load_out),
                                 json.dumps(items)])  # fmt: skip
        time.sleep(3.0)  # let the load settle
        console.print(f"background load {LOAD_RATE:.0f} events/s on; {TRIALS} trials")
        t0 = time.perf_counter()
        res = run_trials(ing_url, score_url, users, probe, seen, TRIALS, seed=11)
        trial_s = time.perf_counter() - t0
        load.send_signal(signal.SIGTERM)
        load.wait(30)
        bg = json.loads(load_out.read_text()) if load_out.exists() else {"accepted": 0, "seconds": 1, "errors": -1}
        lag.stop()
        probe.stop()
        seen.stop()
        fresh, transport, seen_w = res["fresh_ms"], res["transport_ms"], res["seen_ms"]
        lag_stats = {
            g.removeprefix(f"fresh-{run}-"): {"max": max(s) if s else None,
                                              "mean": round(statistics.fmean(s), 1) if s else None,
                                              "samples": len(s)}
            for g, s in lag.samples.items()
        }  # fmt: skip
        p50, p99 = pct(fresh, 0.5), pct(fresh, 0.99)
        t50, t99 = pct(transport, 0.5), pct(transport, 0.99)
        result = {
            "trials": len(fresh), "timeouts": res["timeouts"], "skipped": res["skipped"],
            "p50_ms": round(p50, 2) if p50 is not None else None,
            "p99_ms": round(p99, 2) if p99 is not None else None,
            "max_ms": round(max(fresh), 2) if fresh else None,
            "mean_ms": round(statistics.fmean(fresh), 2) if fresh else None,
            "polls_p50": pct([float(p) for p in res["polls"]], 0.5),
            "transport_floor_p50_ms": round(t50, 2) if t50 is not None else None,
            "transport_floor_p99_ms": round(t99, 2) if t99 is not None else None,
            "seen_written_p50_ms": pct(seen_w, 0.5), "seen_written_p99_ms": pct(seen_w, 0.99),
            "seen_written_max_ms": max(seen_w) if seen_w else None,
            "ratio_p50_vs_transport": round(p50 / t50, 2) if p50 and t50 else None,
            "background_events_per_s": round(bg["accepted"] / max(bg["seconds"], 1e-9), 1),
            "background_errors": bg["errors"],
            "consumer_lag": lag_stats,
            "targets": {"p50_ms": TARGET_P50_MS, "p99_ms": TARGET_P99_MS},
            "met": bool(p50 is not None and p99 is not None and p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS
                        and res["timeouts"] == 0),
            "idle": {"trials": len(idle["fresh_ms"]), "timeouts": idle["timeouts"],
                     "p50_ms": pct(idle["fresh_ms"], 0.5), "p99_ms": pct(idle["fresh_ms"], 0.99),
                     "max_ms": max(idle["fresh_ms"]) if idle["fresh_ms"] else None,
                     "transport_floor_p50_ms": pct(idle["transport_ms"], 0.5)},
            "gorse_default_refresh_ms": 3_600_000,
            "params": {"poll_ms": POLL_S * 1000, "trial_timeout_s": TRIAL_TIMEOUT_S, "load_rate": LOAD_RATE,
                       "trial_seconds": round(trial_s, 1), "model": f"als@{version} (implicit, ML-100K, 32 factors)",
                       "criterion": "clicked top-1 item absent from the k=10 list (exclude_seen=true)",
                       "cores": os.cpu_count(), "python": platform.python_version()},
        }  # fmt: skip
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2))
        t = Table(title="Freshness: click 202 → changed recommendations (ms)")
        for c in ("path", "p50", "p99", "max", "n"):
            t.add_column(c, justify="left" if c == "path" else "right")
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        i_f, i_t = idle["fresh_ms"], idle["transport_ms"]
        t.add_row("no load: transport floor", fmt(pct(i_t, 0.5)), fmt(pct(i_t, 0.99)),
                  fmt(max(i_t) if i_t else None), str(len(i_t)))  # fmt: skip
        t.add_row("no load: recommendations changed", fmt(pct(i_f, 0.5)), fmt(pct(i_f, 0.99)),
                  fmt(max(i_f) if i_f else None), f"{len(i_f)} (+{idle['timeouts']} timeouts)")  # fmt: skip
        t.add_row("transport floor (raw consumer sees the event)", fmt(t50), fmt(t99),
                  fmt(max(transport) if transport else None), str(len(transport)))  # fmt: skip
        t.add_row("seen item written to Redis (feedback fast lane)", fmt(pct(seen_w, 0.5)), fmt(pct(seen_w, 0.99)),
                  fmt(max(seen_w) if seen_w else None), str(len(seen_w)))  # fmt: skip
        t.add_row("recommendations changed (exclude_seen)", fmt(p50), fmt(p99),
                  fmt(max(fresh) if fresh else None), f"{len(fresh)} (+{res['timeouts']} timeouts)")  # fmt: skip
        console.print(t)
        console.print(f"background {result['background_events_per_s']:,.0f} events/s; timeouts {res['timeouts']}; "
                      f"lag {lag_stats}; targets p50 ≤ {TARGET_P50_MS:.0f}, p99 ≤ {TARGET_P99_MS:.0f}: "
                      f"{'met' if result['met'] else 'NOT met'}")  # fmt: skip
        console.print(f"wrote {OUT.relative_to(ROOT)}")
    except Exception:
        for name in procs:
            log = work / f"{name.rsplit('.', 1)[-1]}.log"
            if log.exists():
                console.print(f"--- {name} log tail ---\n" + log.read_text()[-1500:])
        raise
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        for s in (probe, lag, seen):
            if s is not None and s.t.is_alive():
                s.stop()
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        import redis as redis_lib

        client = redis_lib.Redis.from_url(redis.address)
        for key in client.scan_iter(match=f"rm:{tenant}:*", count=5000):
            client.delete(key)
        client.close()
        topics.delete_all(admin)
        if redis.stop:
            redis.stop()
        if kafka.stop:
            kafka.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_process(sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[5]), 3600.0, sys.argv[4])
    else:
        main()
