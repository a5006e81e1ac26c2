"""Training service against the real broker: lake sink exactly-once (also across SIGKILL), scheduled
retraining, promotion gate with models.published.v1, rollback, reproducible tuning from the lake."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from recmesh.core.bus import ConsumerRunner, EventProducer, Subscription
from recmesh.core.events import Interaction, ItemUpdate, ModelPublished
from recmesh.core.registry import Registry
from recmesh.core.topics import CATALOG_ITEMS, INTERACTIONS, MODELS_PUBLISHED, TopicRegistry
from recmesh.training import lake
from recmesh.training.gate import GateConfig, kafka_publisher, rollback
from recmesh.training.pipeline import TrainRequest, run_training

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
T0 = (int(time.time()) // 86_400 - 1) * 86_400_000  # yesterday 00:00 UTC: inside the retrain window


def _events(n: int, start: int = 0, n_users: int = 80, n_items: int = 200) -> list[Interaction]:
    """Block-structured clicks: user u walks through the items of block u % 4 (a learnable signal)."""
    out = []
    size = n_items // 4
    for k in range(start, start + n):
        u, j = k % n_users, k // n_users
        item = (u % 4) * size + (3 * j + 7 * u) % size if k % 5 else (k * 13) % n_items
        out.append(Interaction(f"ev{k}", f"u{u}", f"i{item}", "click", None, T0 + k * 1000))
    return out


def _produce(settings, events, items=()) -> None:
    producer = EventProducer(settings.kafka, TopicRegistry(prefix=settings.kafka.topic_prefix), client_id="t")
    for ev in events:
        producer.send(INTERACTIONS, ev)
    for it in items:
        producer.send(CATALOG_ITEMS, it)
    assert producer.flush(30) == 0
    producer.close()


def _wait(pred, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _service(settings, lake_uri: str, registry: str, port: int, log: Path, **training: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "RECMESH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECMESH_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "RECMESH_REGISTRY__URI": registry,
        "RECMESH_HTTP__PORT": str(port),
        "RECMESH_ENV": "test",
        "RECMESH_TRAINING__LAKE_URI": lake_uri,
        "RECMESH_TRAINING__GROUP_ID": f"sink-{settings.kafka.topic_prefix}",
        "RECMESH_TRAINING__SINK_BATCH_ROWS": "150",
        "RECMESH_TRAINING__SINK_BATCH_SECONDS": "0.3",
        "RECMESH_TRAINING__RETRAIN_EVERY_MINUTES": "600",
        **{f"RECMESH_TRAINING__{k.upper()}": v for k, v in training.items()},
    }
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "recmesh.training"], env=env, cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def _ids(lake_uri: str) -> list[str]:
    return list(lake.read_lake(lake_uri)["event_id"])


def test_sink_writes_each_event_once_across_sigkill_and_retrains(settings_factory, tmp_path):
    """Exists because the lake is the training source of truth: a crash between writing a file and
    committing its offsets must neither lose nor duplicate rows, and the service must retrain from it."""
    settings = settings_factory()
    lake_uri, registry = str(tmp_path / "lake"), str(tmp_path / "registry")
    first = _events(2400)
    items = [ItemUpdate(f"i{i}", title=f"Item {i}", updated_at=T0) for i in range(40)]
    _produce(settings, first, items)

    port, log = _free_port(), tmp_path / "service.log"
    # small batches (a file, an fsync and a commit per 20 rows) and a tight poll, so the kill lands
    # while most of the burst is still unwritten: at 150-row batches the sink could drain all
    # 2400 rows between two polls and the "crash" would come after the stream, proving nothing
    proc = _service(settings, lake_uri, registry, port, log, sink_batch_rows="20")
    try:
        _wait(lambda: len(lake.lake_files(lake_uri)) >= 2, 60, "the first lake files", every=0.005)
        proc.send_signal(signal.SIGKILL)  # mid-stream: files written, some offsets not committed
        proc.wait(10)
        partial = set(_ids(lake_uri))
        # the kill really came mid-stream: the whole burst was on the topic, the lake held only
        # part of it, so the restarted sink has to resume from the committed offsets
        assert 0 < len(partial) < len(first), f"{len(partial)} of {len(first)} rows in the lake at the kill"
        second = _events(600, start=2400)
        _produce(settings, second)
        proc = _service(settings, lake_uri, registry, port, log, model="popularity",
                        retrain_after_events="500", min_interactions="100")  # fmt: skip
        expected = sorted(e.event_id for e in first + second)
        _wait(lambda: len(_ids(lake_uri)) >= len(expected), 90, "every event in the lake")
        res = lake.read_lake_detailed(lake_uri)
        assert sorted(res.frame["event_id"]) == expected  # each event exactly once after dedupe
        assert res.corrupt == []
        # a temp file the SIGKILL left behind is never read as data, and the sweep removes it
        lake.sweep_temp_files(lake_uri, older_than_s=0)
        assert not list(Path(lake_uri).rglob(".tmp-*"))
        row = res.frame.set_index("event_id").loc["ev7"]
        assert (row["user_id"], row["item_id"], int(row["timestamp"])) == ("u7", first[7].item_id, T0 + 7000)
        _wait(lambda: len(lake.latest_catalog(lake_uri)) >= 40, 30, f"the catalog: {log.read_text()[-3000:]}")
        catalog = lake.latest_catalog(lake_uri)
        assert sorted(catalog["item_id"]) == sorted(f"i{i}" for i in range(40))

        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _get(base + "/readyz") == 200, 30, "readiness")
        reg = Registry(registry)
        _wait(lambda: reg.champion("popularity") is not None, 60, f"the scheduled retrain: {log.read_text()[-2000:]}")
        metrics = httpx.get(base + "/metrics").text
        assert "recmesh_training_lake_rows_total" in metrics and "recmesh_training_promotions_total" in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after its shutdown
        assert "consumer stopped" in log.read_text()  # the sink finished its batch and committed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def _collect_published(settings, group_id: str, n: int) -> list[ModelPublished]:
    got: list[ModelPublished] = []
    done = threading.Event()

    def handle(records):
        got.extend(r.value for r in records)
        if len(got) >= n:
            done.set()

    runner = ConsumerRunner(settings.kafka, TopicRegistry(prefix=settings.kafka.topic_prefix), group_id,
                            [Subscription(MODELS_PUBLISHED, handle)])  # fmt: skip
    t = runner.start_thread()
    done.wait(30)
    runner.stop()
    t.join(15)
    return got


def test_gate_promotes_better_refuses_worse_and_rollback_publishes(settings_factory, group_id, tmp_path):
    """Exists because promotion is what scoring hot-swaps on: only a version that wins on the same
    split may become champion, and every champion change (promotion, rollback) reaches the topic."""
    settings = settings_factory()
    data = tmp_path / "inter.csv"
    rows = ["user_id,item_id,timestamp,event_type"] + [
        f"{e.user_id},{e.item_id},{e.timestamp},click" for e in _events(2400)
    ]
    data.write_text("\n".join(rows))
    reg = Registry(str(tmp_path / "registry"))
    publish, close = kafka_publisher(settings)
    gate = GateConfig(margin=0.02)
    bad = {"factors": 2, "iterations": 1, "regularization": 500.0}
    good = {"factors": 8, "iterations": 10, "regularization": 0.05}
    try:
        v1 = run_training(TrainRequest("als", params=bad, interactions=str(data), gate=gate), reg, publish)
        v2 = run_training(TrainRequest("als", params=good, interactions=str(data), gate=gate), reg, publish)
        v3 = run_training(TrainRequest("als", params=bad, interactions=str(data), gate=gate), reg, publish)
        assert v1.promoted and v2.promoted, (v1.decision, v2.decision)
        assert v2.metrics["ndcg@10"] > v1.metrics["ndcg@10"] * 1.02
        assert not v3.promoted and reg.get("als", v3.version).status == "challenger"
        assert reg.champion("als").version == v2.version
        assert "refused" in reg.get("als", v3.version).note
        rb = rollback(reg, "als", publish)
    finally:
        close()
    assert (rb.version, rb.previous_version) == (v1.version, v2.version)
    assert reg.champion("als").version == v1.version
    events = _collect_published(settings, group_id, 3)
    assert [(e.version, e.action, e.previous_version) for e in events] == [
        (v1.version, "promote", None),
        (v2.version, "promote", v1.version),
        (v1.version, "rollback", v2.version),
    ]
    assert events[1].artifact_uri == reg.get("als", v2.version).uri and events[1].kind == "vectors"
    assert events[1].metrics["ndcg@10"] == pytest.approx(v2.metrics["ndcg@10"])


def test_tuned_training_from_the_lake_is_reproducible(settings_factory, group_id, tmp_path):
    """Exists because a tuned model must be reproducible from the lake: same events, same seed →
    same best parameters and metrics, whatever the batch boundaries the sink happened to use."""
    settings = settings_factory()
    lake_uri = str(tmp_path / "lake")
    _produce(settings, _events(1600))
    sink = lake.LakeSink(settings.kafka, TopicRegistry(prefix=settings.kafka.topic_prefix), lake_uri,
                         group_id=group_id, batch_rows=300, batch_seconds=0.3)  # fmt: skip
    t = sink.start_thread()
    try:
        _wait(lambda: sink.rows_by_topic.get("interactions.v1", 0) >= 1600, 60, "the lake")
    finally:
        sink.stop()
        t.join(15)
    results = []
    for run in range(2):
        reg = Registry(str(tmp_path / f"registry{run}"))
        req = TrainRequest("itemknn", lake_uri=lake_uri, tune_trials=4, seed=11, start_ms=T0, end_ms=T0 + 10**9)
        results.append(run_training(req, reg, None))
    a, b = results
    assert a.tuning.best_params == b.tuning.best_params
    assert [h["value"] for h in a.tuning.history] == [h["value"] for h in b.tuning.history]
    assert a.metrics["ndcg@10"] == b.metrics["ndcg@10"] and a.info.dataset_hash == b.info.dataset_hash
    assert (Path(a.info.uri) / "tuning.html").exists()
