"""Both real-time services as processes, killed with SIGKILL mid-stream and restarted."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

from recmesh.core.bus import EventProducer
from recmesh.core.events import Interaction, now_ms
from recmesh.core.realtime import decayed, parse_recent
from recmesh.core.store import Keys
from recmesh.core.topics import INTERACTIONS, TopicRegistry
from recmesh.feedback.handlers import covisit_pairs
from recmesh.feedback.settings import FeedbackSection
from tests.integration.realtime.util import produce, wait_until

pytestmark = pytest.mark.integration
WEIGHTS = {"click": 1.0, "view": 0.5, "purchase": 4.0}


def spawn(module: str, env: dict[str, str], log_path) -> subprocess.Popen:
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", module], env=env, stdout=subprocess.DEVNULL, stderr=log)


def committed(admin, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on ``topic`` (what a restart resumes from)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    fut = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return sum(max(tp.offset, 0) for tp in fut.result(10).topic_partitions if tp.topic == topic)


def kill_with_uncommitted_work(proc: subprocess.Popen, applied, committed_now, tries: int = 1000) -> int:
    """Freeze the process (SIGSTOP) until it has applied events whose offsets are not committed yet, then
    SIGKILL it: the restart is then *guaranteed* to receive events it already applied. Returns how many
    events it had applied."""
    for attempt in range(tries):
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.001)
        done = applied()
        gap = done - committed_now()
        if gap > 0:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            print(f"killed {proc.args[-1]} after {attempt + 1} freezes with {gap} events applied, not committed")
            return done
        proc.send_signal(signal.SIGCONT)
        time.sleep(random.uniform(0, 0.005))
    raise AssertionError("never caught the process between applying a batch and committing it")


def test_sigkill_mid_stream_loses_nothing_and_double_counts_nothing(
    settings_factory, redis_client, tenant, group_id, tmp_path
):
    """Exists because at-least-once delivery plus idempotent effects is the whole recovery story: a process
    killed between applying a batch and committing its offsets re-reads that batch after restart, and the
    MULTI/EXEC of effects + event-id markers must make the second pass a no-op while nothing is skipped."""
    settings = settings_factory()
    env = {
        **os.environ,
        "RECMESH_ENV": "test", "RECMESH_TENANT": tenant, "RECMESH_LOG_JSON": "true",
        "RECMESH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECMESH_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "RECMESH_REDIS__URL": settings.redis.url, "RECMESH_REDIS__RECENT_ITEMS_MAX": "100000",
        "RECMESH_REGISTRY__URI": str(tmp_path / "registry"), "RECMESH_HTTP__PORT": "0",
        "RECMESH_FEEDBACK__GROUP_ID": group_id + "-fb", "RECMESH_FEEDBACK__GROUP_INSTANCE_ID": "fb-0",
        "RECMESH_PERSONALIZATION__GROUP_ID": group_id + "-pz", "RECMESH_PERSONALIZATION__GROUP_INSTANCE_ID": "pz-0",
        "RECMESH_KAFKA__CONSUMER_BATCH_SIZE": "10",
    }  # fmt: skip
    k = Keys(tenant)
    t0 = now_ms()
    types = list(WEIGHTS)
    events = [Interaction(f"e{n}", f"u{n % 10}", f"i{(n * 7) % 23}", types[n % 3], None, t0 + n, tenant=tenant)
              for n in range(60_000)]  # fmt: skip
    sent = [40]  # events[:sent[0]] are on the topic
    killed = threading.Event()
    procs = [spawn("recmesh.feedback", env, tmp_path / "fb.log"),
             spawn("recmesh.personalization", env, tmp_path / "pz.log")]  # fmt: skip

    stream_errors: list[BaseException] = []

    def stream() -> None:
        producer = EventProducer(settings.kafka, TopicRegistry(prefix=settings.kafka.topic_prefix), client_id="t")
        after_kill = 0
        try:
            # a steady ~600 events/s keeps both services busy, until a while after both were killed
            while sent[0] < len(events) - 300 and after_kill < 300:
                for e in events[sent[0] : sent[0] + 20]:
                    producer.send(INTERACTIONS, e)
                producer.flush(10)
                sent[0] += 20
                after_kill += 20 if killed.is_set() else 0
                time.sleep(0.03)
        except BaseException as exc:
            stream_errors.append(exc)
        finally:
            producer.close()

    producer = threading.Thread(target=stream)
    try:
        produce(settings, INTERACTIONS, events[:40])
        wait_until(lambda: redis_client.llen(k.recent_items("u9")) >= 4 and redis_client.zcard(k.seen("u9")) >= 1,
                   timeout=60, what="both services consuming")  # fmt: skip
        producer.start()
        admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
        topic = settings.kafka.topic_prefix + INTERACTIONS.name
        fb_applied = lambda: sum(1 for _ in redis_client.scan_iter(match=f"rm:{tenant}:dd:feedback:*", count=2000))  # noqa: E731
        pz_applied = lambda: sum(redis_client.llen(k.recent_items(f"u{i}")) for i in range(10))  # noqa: E731
        applied_at_kill = [
            kill_with_uncommitted_work(procs[0], fb_applied, lambda: committed(admin, group_id + "-fb", topic)),
            kill_with_uncommitted_work(procs[1], pz_applied, lambda: committed(admin, group_id + "-pz", topic)),
        ]
        killed.set()
        env["RECMESH_KAFKA__CONSUMER_BATCH_SIZE"] = "500"  # small batches only to make the kill window frequent
        procs = [spawn("recmesh.feedback", env, tmp_path / "fb.log"),
                 spawn("recmesh.personalization", env, tmp_path / "pz.log")]  # fmt: skip
        producer.join(120)
        assert not stream_errors, f"the event stream failed: {stream_errors!r}"
        # Events the restarted processes have never seen, whatever the stream's timing was.
        produce(settings, INTERACTIONS, events[sent[0] : sent[0] + 300])
        sent[0] += 300
        assert max(applied_at_kill) < sent[0]
        events = events[: sent[0]]
        per_user = Counter(e.user_id for e in events)
        wait_until(lambda: all(redis_client.llen(k.recent_items(u)) >= n for u, n in per_user.items()),
                   timeout=120, what="personalization caught up")  # fmt: skip
        wait_until(lambda: fb_applied() >= len(events), timeout=120, what="feedback caught up")
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:  # a clean shutdown; uvicorn re-raises the signal it handled as the exit status
            assert p.wait(30) in (0, -signal.SIGTERM)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        if producer.ident is not None:
            producer.join(60)

    # personalization: every user's recent list is exactly their events, each once
    for u in per_user:
        got = sorted(parse_recent(r)["ts"] for r in redis_client.lrange(k.recent_items(u), 0, -1))
        assert got == sorted(e.timestamp for e in events if e.user_id == u)
    # feedback: decayed popularity of every item is the exact sum of its events' weights
    for item in {e.item_id for e in events}:
        want = sum(WEIGHTS[e.event_type] * 0.5 ** ((t0 - e.timestamp) / 7 / 86_400_000)
                   for e in events if e.item_id == item)  # fmt: skip
        assert decayed(redis_client.zscore(k.popularity(), item), t0, 7 * 86400.0) == pytest.approx(want, rel=1e-9)
    assert sum(redis_client.zcard(k.seen(u)) for u in per_user) == len({(e.user_id, e.item_id) for e in events})
    # trending: every window's decayed count is the exact sum too (a replayed batch would add its events twice)
    for window, half_life_s in FeedbackSection().trending_windows.items():
        for item in {e.item_id for e in events}:
            want = sum(WEIGHTS[e.event_type] * 0.5 ** ((t0 - e.timestamp) / 1000 / half_life_s)
                       for e in events if e.item_id == item)  # fmt: skip
            got = decayed(redis_client.zscore(k.trending(window), item), t0, half_life_s)
            assert got == pytest.approx(want, rel=1e-9), (window, item)
    # co-visitation: each pair counted once per event, as if every user's events were one batch
    section = FeedbackSection()
    want_cov: Counter[tuple[str, str]] = Counter()
    for u in per_user:
        want_cov.update(covisit_pairs([e for e in events if e.user_id == u], [], section))
    got_cov = {(item, n.decode()): c for item in {e.item_id for e in events}
               for n, c in redis_client.zrange(k.covisit(item), 0, -1, withscores=True)}  # fmt: skip
    assert got_cov == dict(want_cov)
