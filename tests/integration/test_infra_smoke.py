"""The foundation works end to end: a real broker carries an event and a real Redis stores state."""

from __future__ import annotations

import threading

import pytest

from recmesh.core.bus import ConsumerRunner, EventProducer, Record, Subscription
from recmesh.core.events import Interaction, new_id, now_ms
from recmesh.core.store import Keys, connect
from recmesh.core.topics import INTERACTIONS

pytestmark = pytest.mark.integration


def test_produce_consume_and_redis_round_trip(settings_factory, group_id, redis_client, tenant):
    """Exists because every service relies on this path: typed event → Kafka → runner → handler → Redis."""
    settings = settings_factory()
    producer = EventProducer(settings.kafka, topics=_topics(settings), client_id="smoke").start()
    sent = [Interaction(new_id(), f"u{i}", f"i{i % 3}", "click", None, now_ms(), tenant=tenant) for i in range(20)]
    for ev in sent:
        producer.send(INTERACTIONS, ev)
    assert producer.flush(10) == 0

    got: list[Interaction] = []
    done = threading.Event()
    r = connect(settings.redis)
    keys = Keys(tenant)

    def handler(records: list[Record[Interaction]]) -> None:
        pipe = r.pipeline(transaction=False)
        for rec in records:
            assert rec.value is not None
            got.append(rec.value)
            pipe.zincrby(keys.popularity(), 1, rec.value.item_id)
        pipe.execute()
        if len(got) >= len(sent):
            done.set()

    runner = ConsumerRunner(settings.kafka, _topics(settings), group_id, [Subscription(INTERACTIONS, handler)])
    t = runner.start_thread()
    assert done.wait(30), f"only {len(got)} of {len(sent)} events arrived"
    runner.stop()
    t.join(15)
    producer.close()
    r.close()
    assert sorted(e.event_id for e in got) == sorted(e.event_id for e in sent)
    assert got[0] == next(e for e in sent if e.event_id == got[0].event_id)  # decoded unchanged
    scores = {k.decode(): v for k, v in redis_client.zrange(keys.popularity(), 0, -1, withscores=True)}
    assert scores == {"i0": 7.0, "i1": 7.0, "i2": 6.0}


def _topics(settings):
    from recmesh.core.topics import TopicRegistry

    return TopicRegistry(prefix=settings.kafka.topic_prefix)
