"""Serving latency: open-loop load on the scoring service vs a hello-world route of the same stack.

Builds a 100,000-item, 64-dimension vectors artifact in a temporary registry and 100,000 user
vectors in Redis (under a tenant of its own, written with the ``Keys`` builder, pipelined),
starts Redis (``tests/infra.start_redis`` on 26379 unless ``RECMESH_TEST_REDIS`` names one) and
the scoring server as a subprocess (``python -m recmesh.scoring``: uvicorn + uvloop + httptools,
HNSW index, gRPC on).

By default (``--impressions``) the server runs the production path: every response is published
to ``recommendations.served.v1`` and the catalog and models topics are followed, on a broker from
``tests/infra.start_kafka`` (``RECMESH_TEST_KAFKA`` when set, else a local one on 29292) under
topics of the run's own prefix, deleted afterwards. ``--no-impressions`` measures the lighter
path without Kafka (no producer thread, no consumers); the JSON (``impressions``) and the table
title say which path was measured, so the two are never compared by mistake.

The load generator runs in another process and is OPEN-LOOP: request ``i`` is due at
``t0 + i / rate`` whatever happened before, and its latency is measured from that scheduled
time (so a stalled server is charged for the queue it causes: no coordinated omission). It
reports p50/p99 and errors (non-200 or > 2 s) at 200, 500 and 1,000 requests/s (~10 s each),
searches the maximum sustainable rate (p99 ≤ 10 ms and zero errors), and runs the same
schedule against ``GET /_hello`` on the same server → ``ratio_vs_hello``.

Writes ``bench/results/serve.json`` and prints a table. Not a test; never gates anything.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RECMESH_TEST_REDIS_PORT", "26379")
os.environ.setdefault("RECMESH_TEST_KAFKA_PORT", "29292")

N_ITEMS = int(os.environ.get("BENCH_ITEMS", "100000"))
N_USERS = int(os.environ.get("BENCH_USERS", "100000"))
DIM = int(os.environ.get("BENCH_DIM", "64"))
PHASE_S = float(os.environ.get("BENCH_PHASE_S", "10"))
PROBE_S = float(os.environ.get("BENCH_PROBE_S", "5"))
RATES = (200, 500, 1000)
P99_TARGET_MS = 10.0
OUT = ROOT / "bench" / "results" / "serve.json"


# ------------------------------------------------------------------------------ load generator
async def _loadgen(port: int, rate: float, duration: float, kind: str, n_users: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    n = int(rate * duration)
    if kind == "hello":
        paths = [b"/_hello"] * n
    else:
        paths = [f"/v1/users/u{rng.randrange(n_users)}/recommendations?k=10".encode() for _ in range(n)]
    # FIFO: every pooled connection is reused in turn. (A LIFO pool left the bottom connections idle
    # past uvicorn's keep-alive timeout; the server closed them and the next request on one failed.)
    idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = collections.deque()
    opened = [0]
    why: collections.Counter[str] = collections.Counter()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        opened[0] += 1
        return await asyncio.open_connection("127.0.0.1", port)

    for _ in range(32):  # warm pool: connection setup is not what is measured
        idle.append(await connect())
    lat = [0.0] * n
    ok = [False] * n

    async def one(i: int, due: float) -> None:
        conn = idle.popleft() if idle else await connect()
        reader, writer = conn
        try:
            writer.write(b"GET " + paths[i] + b" HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await asyncio.wait_for(reader.readexactly(length), 2.0)
            lat[i] = time.perf_counter() - due
            # a degraded answer (Redis unreachable) is not the path under test: counted as an error
            if status != 200:
                why[f"http {status}"] += 1
            elif kind != "hello" and b'"degraded":false' not in body:
                why["degraded"] += 1
            elif kind != "hello" and body.count(b'"item_id"') != 10:
                why["short list"] += 1
            else:
                ok[i] = True
            idle.append(conn)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            lat[i] = time.perf_counter() - due
            why[type(exc).__name__] += 1
            writer.close()

    tasks = []
    # perf_counter, not loop.time(): uvloop's clock is cached at millisecond resolution
    t0 = time.perf_counter() + 0.05
    i = 0
    while i < n:
        now = time.perf_counter()
        while i < n and t0 + i / rate <= now:  # launch everything that is due (never skip)
            tasks.append(asyncio.ensure_future(one(i, t0 + i / rate)))
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
    await asyncio.gather(*tasks)
    for _, w in idle:
        w.close()
    good = sorted(lat[j] for j in range(n) if ok[j])
    errors = n - len(good)

    def pct(p: float) -> float:
        # errors count as infinitely slow: they sit at the top of the distribution
        allv = good + [float("inf")] * errors
        return allv[min(len(allv) - 1, int(p * len(allv)))] * 1000 if allv else float("nan")

    def fin(x: float) -> float | None:  # JSON has no inf/nan: "unmeasurable" is null
        return None if x != x or x == float("inf") else round(x, 3)

    return {"rate": rate, "requests": n, "errors": errors, "p50_ms": fin(pct(0.50)), "p99_ms": fin(pct(0.99)),
            "max_ms": fin(good[-1] * 1000 if good else float("nan")), "connections": opened[0],
            "error_kinds": dict(why)}  # fmt: skip


def settle(port: int, timeout: float = 60.0) -> None:
    """Wait until the server has drained the previous phase (a quick /healthz answers in < 5 ms)."""
    import httpx

    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
        fast = 0
        while fast < 5 and time.monotonic() < deadline:
            t = time.perf_counter()
            try:
                c.get("/healthz")
            except httpx.HTTPError:  # still draining an overload: keep waiting
                fast = 0
                continue
            fast = fast + 1 if time.perf_counter() - t < 0.005 else 0
            time.sleep(0.05)
    time.sleep(0.5)


def run_loadgen(port: int, rate: float, duration: float, kind: str, seed: int = 0) -> dict[str, Any]:
    """One open-loop phase in a separate process (the generator must not share the server's CPU slice)."""
    settle(port)
    args = json.dumps({"port": port, "rate": rate, "duration": duration, "kind": kind, "seed": seed, "users": N_USERS})
    out = subprocess.run([sys.executable, __file__, "--loadgen", args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _sustainable(r: dict[str, Any]) -> bool:
    return r["errors"] == 0 and r["p99_ms"] is not None and r["p99_ms"] <= P99_TARGET_MS


def max_rate(port: int, kind: str, start: float) -> tuple[float, list[dict[str, Any]]]:
    """Largest rate with p99 ≤ 10 ms and no errors: grow ×1.4 until it fails, then bisect twice."""
    probes = []
    lo, hi = 0.0, None
    rate = start
    while hi is None and rate <= 20_000:
        r = run_loadgen(port, rate, PROBE_S, kind, seed=int(rate))
        probes.append(r)
        if _sustainable(r):
            lo, rate = rate, rate * 1.4
        else:
            hi = rate
    if hi is None:
        return lo, probes
    for _ in range(2):
        mid = (lo + hi) / 2
        r = run_loadgen(port, mid, PROBE_S, kind, seed=int(mid))
        probes.append(r)
        lo, hi = (mid, hi) if _sustainable(r) else (lo, mid)
    return lo, probes


# ------------------------------------------------------------------------------ fixtures
def build_artifact(registry_uri: str) -> tuple[str, Any]:
    import numpy as np

    from recmesh.core.artifacts import ModelArtifact
    from recmesh.core.registry import Registry, VersionInfo

    rng = np.random.default_rng(0)
    # factor-like vectors: a mixture of taste clusters (isotropic noise is not what models learn)
    centers = rng.standard_normal((500, DIM)).astype(np.float32)
    items = (centers[rng.integers(0, 500, N_ITEMS)] + 0.5 * rng.standard_normal((N_ITEMS, DIM))).astype(np.float32)
    users = (centers[rng.integers(0, 500, N_USERS)] + 0.5 * rng.standard_normal((N_USERS, DIM))).astype(np.float32)
    art = ModelArtifact(
        name="default",
        kind="vectors",
        item_ids=[f"i{j}" for j in range(N_ITEMS)],
        popularity=rng.pareto(1.2, N_ITEMS).astype(np.float32),
        item_vectors=items,
    )
    reg = Registry(registry_uri)
    version = "bench-v1"
    uri = reg.version_uri("default", version)
    art.save(uri)
    reg.register(VersionInfo(name="default", version=version, uri=uri, kind="vectors"))
    reg.set_champion("default", version)
    return version, users


def load_users(redis_url: str, tenant: str, version: str, users: Any) -> float:
    import redis

    from recmesh.core.store import Keys

    keys = Keys(tenant)
    r = redis.Redis.from_url(redis_url)
    t0 = time.perf_counter()
    for lo in range(0, len(users), 5000):
        pipe = r.pipeline(transaction=False)
        for j in range(lo, min(lo + 5000, len(users))):
            pipe.set(keys.user_vector(f"u{j}", "default", version), users[j].tobytes(), ex=3600)
        pipe.execute()
    r.close()
    return time.perf_counter() - t0


def cleanup_tenant(redis_url: str, tenant: str) -> None:
    import redis

    r = redis.Redis.from_url(redis_url)
    batch = []
    for key in r.scan_iter(match=f"rm:{tenant}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            r.delete(*batch)
            batch = []
    if batch:
        r.delete(*batch)
    r.close()


def _ms(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    registry: str, redis_url: str, tenant: str, kafka: str | None = None, topic_prefix: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    """The scoring server; with ``kafka`` it publishes impressions and follows the catalog and models."""
    port = free_port()
    on = "true" if kafka else "false"
    env = {
        **os.environ,
        "RECMESH_HTTP__PORT": str(port),
        "RECMESH_TENANT": tenant,
        "RECMESH_REGISTRY__URI": registry,
        "RECMESH_REDIS__URL": redis_url,
        "RECMESH_LOG_LEVEL": "WARNING",
        "RECMESH_SCORING__GRPC_PORT": str(free_port()),
        "RECMESH_SCORING__IMPRESSIONS": on,
        "RECMESH_SCORING__CONSUME_MODELS": on,
        "RECMESH_SCORING__CONSUME_CATALOG": on,
        "RECMESH_SCORING__HELLO_ROUTE": "true",
    }
    if kafka:
        env["RECMESH_KAFKA__BOOTSTRAP_SERVERS"] = kafka
        env["RECMESH_KAFKA__TOPIC_PREFIX"] = topic_prefix
    proc = subprocess.Popen([sys.executable, "-m", "recmesh.scoring"], env=env, cwd=str(ROOT))
    import httpx

    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise RuntimeError("scoring server exited")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("scoring server not ready after 600 s")
        time.sleep(0.5)


def impression_counts(port: int) -> dict[str, float]:
    """``recmesh_scoring_impressions_total`` by result (sent, dropped, failed) from /metrics."""
    import httpx

    out: dict[str, float] = {}
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("recmesh_scoring_impressions_total{"):
            label = line.split('result="', 1)[1].split('"', 1)[0]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    ap.add_argument(
        "--impressions",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="production path: publish impressions and follow the catalog/models topics on a broker "
        "(RECMESH_TEST_KAFKA, else a local one); --no-impressions measures the lighter path without Kafka "
        "(default: %(default)s)",
    )
    return ap.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    from tests.infra import start_redis

    console = Console()
    load_before = os.getloadavg()
    redis_svc = start_redis()
    tenant = f"bench{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="rm-bench-serve-"))
    proc = None
    kafka_svc = admin = topics = None
    impressions: dict[str, float] = {}
    try:
        if args.impressions:
            from confluent_kafka.admin import AdminClient

            from recmesh.core.topics import TopicRegistry
            from tests.infra import start_kafka

            kafka_svc = start_kafka()
            topics = TopicRegistry(prefix=f"bench-serve-{tenant}.")
            admin = AdminClient({"bootstrap.servers": kafka_svc.address})
            topics.ensure(admin)
        t0 = time.perf_counter()
        version, users = build_artifact(str(tmp / "registry"))
        build_s = time.perf_counter() - t0
        users_s = load_users(redis_svc.address, tenant, version, users)
        del users
        t0 = time.perf_counter()
        proc, port = start_server(
            str(tmp / "registry"),
            redis_svc.address,
            tenant,
            kafka_svc.address if kafka_svc else None,
            topics.prefix if topics else "",
        )
        ready_s = time.perf_counter() - t0
        console.print(f"artifact {build_s:.1f}s, {N_USERS} users → Redis {users_s:.1f}s, server ready {ready_s:.1f}s")
        run_loadgen(port, 200, 2, "recommend", seed=99)  # warm-up (JIT-free, but caches and pools)
        run_loadgen(port, 200, 1, "hello", seed=98)
        rec = {r: run_loadgen(port, r, PHASE_S, "recommend", seed=r) for r in RATES}
        hello = {r: run_loadgen(port, r, PHASE_S, "hello", seed=r) for r in RATES}
        rec_max, rec_probes = max_rate(port, "recommend", 500)
        hello_max, hello_probes = max_rate(port, "hello", 1000)
        if args.impressions:
            impressions = impression_counts(port)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        cleanup_tenant(redis_svc.address, tenant)
        if redis_svc.stop:
            redis_svc.stop()
        if topics is not None and admin is not None:
            topics.delete_all(admin)
        if kafka_svc is not None and kafka_svc.stop:
            kafka_svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    result = {
        "benchmark": "serve",
        "items": N_ITEMS,
        "users": N_USERS,
        "dim": DIM,
        "index": "hnsw",
        # which path was measured: with impressions, every response also goes to the producer thread
        # and the catalog/models consumers run, as in production; without, a lighter path
        "impressions": bool(args.impressions),
        "impressions_published": impressions or None,
        "phase_s": PHASE_S,
        "target": {"p99_ms": P99_TARGET_MS, "rate": 500},
        "recommend": {str(r): v for r, v in rec.items()},
        "hello": {str(r): v for r, v in hello.items()},
        "max_sustainable_rps": {"recommend": round(rec_max), "hello": round(hello_max)},
        "probes": {"recommend": rec_probes, "hello": hello_probes},
        "ratio_vs_hello": {
            "p50_at_500": ratio(rec[500]["p50_ms"], hello[500]["p50_ms"]),
            "p99_at_500": ratio(rec[500]["p99_ms"], hello[500]["p99_ms"]),
            "max_rate": ratio(rec_max, hello_max),
        },
        "target_met": _sustainable(rec[500]),
        "setup_s": {
            "artifact": round(build_s, 1),
            "users_to_redis": round(users_s, 1),
            "server_ready": round(ready_s, 1),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
        },  # fmt: skip
        "created_at": int(time.time() * 1000),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, allow_nan=False, default=str) + "\n")

    path = "impressions + catalog/models consumers on" if args.impressions else "impressions OFF (no Kafka)"
    table = Table(title=f"scoring: {N_ITEMS:,} items × {DIM}d, {N_USERS:,} users (open loop; {path})")
    for col in ("endpoint", "rate/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(col, justify="right")
    for name, res in (("recommend", rec), ("hello", hello)):
        for r in RATES:
            v = res[r]
            table.add_row(name, str(r), _ms(v["p50_ms"]), _ms(v["p99_ms"]), str(v["errors"]))
    console.print(table)
    console.print(
        f"max sustainable (p99 ≤ {P99_TARGET_MS:g} ms, 0 errors): recommend {rec_max:.0f}/s, hello {hello_max:.0f}/s; "
        f"ratio_vs_hello {result['ratio_vs_hello']}; target met at 500/s: {result['target_met']}"
    )
    if impressions:
        console.print(f"impressions: {impressions}")
    console.print(f"→ {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--loadgen":
        a = json.loads(sys.argv[2])
        N_USERS = a["users"]
        import uvloop

        res = uvloop.run(_loadgen(a["port"], a["rate"], a["duration"], a["kind"], a["users"], a["seed"]))
        print(json.dumps(res))
    else:
        main(parse_args())
