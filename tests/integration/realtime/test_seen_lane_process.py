"""The feedback seen fast lane as a child process: it writes seen items, is restarted when it dies,
and does not outlive a SIGKILLed parent.

Exists because the lane left the feedback process's threads for a process of its own (freshness
under load): a supervisor that silently loses the child would freeze ``exclude_seen``, and an
orphan that survives its parent would keep consuming after a restart or a rollout.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recmesh.core.events import Interaction, now_ms
from recmesh.core.store import Keys
from recmesh.core.topics import INTERACTIONS
from recmesh.feedback.app import FeedbackService
from recmesh.feedback.settings import FeedbackSettings
from tests.integration.realtime.util import produce, wait_until

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")  # a zombie is gone


def _lane_children(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` and that run the spawn bootstrap of the seen lane."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int(d.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = d.joinpath("cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and b"multiprocessing" in cmd and b"resource_tracker" not in cmd:
            out.append(int(d.name))
    return out


def _lane_pid(svc: FeedbackService) -> int | None:
    ok, details = svc.ready_check()
    lane = details.get("seen_lane", "")
    return int(lane.split()[-1]) if ok and lane.startswith("pid ") else None


def test_seen_lane_child_writes_seen_items_and_is_restarted_after_a_crash(
    settings_factory, redis_client, tenant, group_id
):
    settings = settings_factory(FeedbackSettings, feedback={"group_id": group_id})
    assert settings.feedback.seen_lane_process
    k = Keys(tenant)
    svc = FeedbackService(settings).start()
    try:
        first = wait_until(lambda: _lane_pid(svc), 60, "the seen lane child to be ready")
        produce(settings, INTERACTIONS, [Interaction("s1", "u1", "a", "click", None, now_ms(), tenant=tenant)])
        wait_until(lambda: redis_client.zscore(k.seen("u1"), "a") is not None, what="seen item from the child")

        os.kill(first, signal.SIGKILL)
        # the restart waits a backoff of 1 s first, so a 50 ms poll sees the lane down
        wait_until(lambda: not svc.ready_check()[0], 5, "readiness to drop while the lane is down")
        second = wait_until(lambda: _lane_pid(svc), 60, "a restarted seen lane child")
        assert second != first and svc.seen_lane is not None and svc.seen_lane.restarts == 1

        produce(settings, INTERACTIONS, [Interaction("s2", "u1", "b", "click", None, now_ms(), tenant=tenant)])
        wait_until(lambda: redis_client.zscore(k.seen("u1"), "b") is not None, what="seen item after the restart")
    finally:
        svc.stop()
    assert not _alive(second), "stop() must end the child"


def test_seen_lane_child_does_not_outlive_a_sigkilled_parent(settings_factory, tenant, group_id, tmp_path):
    settings = settings_factory()
    env = {
        **os.environ, "RECMESH_ENV": "test", "RECMESH_TENANT": tenant, "RECMESH_HTTP__PORT": "0",
        "RECMESH_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "RECMESH_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix, "RECMESH_REDIS__URL": settings.redis.url,
        "RECMESH_FEEDBACK__GROUP_ID": group_id,
    }  # fmt: skip
    with open(tmp_path / "fb.log", "ab") as log:
        parent = subprocess.Popen([sys.executable, "-m", "recmesh.feedback"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    try:
        child = wait_until(lambda: _lane_children(parent.pid), 60, "the seen lane child to start")[0]
        time.sleep(1.0)  # let it get as far as consuming
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        wait_until(lambda: not _alive(child), 10, "the orphaned child to stop by itself")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)
