"""A consumer *process* for tests/integration/test_bus.py (no-loss, no-double-effect test).

Reads Interaction events with the real ConsumerRunner and applies, through the documented
Deduper pattern (``unseen`` then effects + ``mark`` in one MULTI/EXEC), two effects per event:
a per-user counter and a total. Settings come from RECMESH_* variables like any service.

Test hooks (environment): ``WORKER_GROUP`` consumer group; ``WORKER_DELAY_S`` sleep per batch
(stretches the run so the test can kill it mid-stream); ``WORKER_CRASH_AFTER`` SIGKILL itself
right after the transaction that brings the total to at least that many events, *before* the
runner commits the offsets: the worst moment to die for at-least-once delivery.
``WORKER_INSTANCE_ID`` sets ``group.instance.id`` (static membership, as a StatefulSet pod
would): a restarted process takes its partitions back at once instead of waiting for the
killed member's session to time out.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

from recmesh.core.bus import ConsumerRunner, Record, Subscription
from recmesh.core.settings import ServiceSettings
from recmesh.core.store import Deduper, Keys, connect
from recmesh.core.topics import INTERACTIONS, TopicRegistry


def counter_keys(tenant: str) -> tuple[str, str, str]:
    """(total, per-user prefix, duplicates-skipped) keys of this test, under the tenant."""
    base = f"{Keys(tenant).p}:test"
    return f"{base}:total", f"{base}:user:", f"{base}:skipped"


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    settings = ServiceSettings()
    tenant = settings.tenant
    r = connect(settings.redis)
    dedupe = Deduper(r, "bus-worker", ttl_s=3600, keys=Keys(tenant))
    total_key, user_prefix, skipped_key = counter_keys(tenant)
    delay = float(os.environ.get("WORKER_DELAY_S", "0"))
    crash_after = int(os.environ.get("WORKER_CRASH_AFTER", "0"))

    def handle(records: list[Record[Any]]) -> None:
        events = [rec.value for rec in records if rec.value is not None]
        ids = [(e.event_id, e.tenant) for e in events]
        fresh = dedupe.unseen(ids)
        pipe = dedupe.transaction()
        for ev, new in zip(events, fresh, strict=True):
            if new:
                pipe.incr(user_prefix + ev.user_id)
                pipe.incr(total_key)
        dedupe.mark(pipe, [i for i, new in zip(ids, fresh, strict=True) if new])
        pipe.execute()
        skipped = fresh.count(False)
        if skipped:
            r.incrby(skipped_key, skipped)  # diagnostics only: proves redelivery happened
        if crash_after and int(r.get(total_key) or 0) >= crash_after:
            os.kill(os.getpid(), signal.SIGKILL)
        if delay:
            time.sleep(delay)

    runner = ConsumerRunner(
        settings.kafka,
        TopicRegistry(settings.kafka.topic_prefix),
        os.environ["WORKER_GROUP"],
        [Subscription(INTERACTIONS, handle)],
        extra_config={"group.instance.id": os.environ["WORKER_INSTANCE_ID"]}
        if os.environ.get("WORKER_INSTANCE_ID")
        else None,
    )
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    runner.run()
    r.close()


if __name__ == "__main__":
    main()
