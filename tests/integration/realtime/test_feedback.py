"""Feedback against the real broker and Redis: exact attribution counts, labels, replay, trending."""

from __future__ import annotations

import pytest

from recmesh.core.events import Interaction, ItemUpdate, RecommendationServed, ServedItem, now_ms
from recmesh.core.realtime import decayed
from recmesh.core.store import Keys
from recmesh.core.topics import CATALOG_ITEMS, FEEDBACK_LABELED, INTERACTIONS, RECOMMENDATIONS_SERVED
from recmesh.feedback.app import FeedbackService
from recmesh.feedback.settings import FeedbackSettings
from tests.integration.realtime.util import ctr, produce, read_topic, snapshot, wait_until

pytestmark = pytest.mark.integration


def served(rid: str, user: str, version: str, variant: str, items: list[str], ts: int, tenant: str):
    return RecommendationServed(
        rid, user, tenant, [ServedItem(i, 1.0 / r, r, "als") for r, i in enumerate(items, start=1)],
        "als", version, variant, "recommend", ts,
    )  # fmt: skip


def test_attribution_counts_match_a_hand_computed_scenario_and_a_replay_changes_nothing(
    settings_factory, redis_client, tenant, group_id
):
    """Exists because CTR per variant/model drives experiments and labels feed training: the join of
    clicks to impressions (by request id, by last impression, parked before the impression) must count
    exactly, and re-reading the whole topic history (a new consumer group) must not count anything twice."""
    settings = settings_factory(FeedbackSettings, feedback={"group_id": group_id})
    k = Keys(tenant)
    t0 = now_ms() - 60_000
    produce(settings, CATALOG_ITEMS, [ItemUpdate(i, tenant, i.upper(), [c]) for i, c in
                                       (("a", "x"), ("b", "x"), ("c", "y"), ("d", "y"))])  # fmt: skip
    produce(settings, RECOMMENDATIONS_SERVED, [
        served("R1", "u1", "v1", "A", ["a", "b", "c"], t0, tenant),
        served("R2", "u2", "v1", "B", ["c", "d"], t0, tenant),
        served("R3", "u1", "v2", "A", ["d", "a"], t0, tenant),
    ])  # fmt: skip

    def ia(eid: str, user: str, item: str, et: str, dt_s: int, rid: str | None = None) -> Interaction:
        return Interaction(eid, user, item, et, None, t0 + dt_s * 1000, "s-" + user, rid, {}, tenant)

    svc = FeedbackService(settings).start()
    try:
        wait_until(lambda: ctr(redis_client, k.ctr("variant", "A"))[0] == 5, what="impressions stored")
        produce(settings, INTERACTIONS, [
            ia("e1", "u1", "b", "click", 2, "R1"),     # click b@R1 (rank 2): +1 label, a@R1 negative
            ia("e2", "u1", "b", "purchase", 5, "R1"),  # conversion b@R1, no second click
            ia("e3", "u2", "c", "click", 3),           # no request id: last impression of c to u2 = R2
            ia("e4", "u2", "d", "view", 4, "R2"),      # a view is not a click
            ia("e5", "u1", "z", "click", 4, "R1"),     # z was not in R1
            ia("e6", "u1", "a", "click", 4, "R3"),     # click a@R3 (rank 2): d@R3 negative
            ia("e7", "u3", "a", "click", 6, "R9"),     # R9 not served yet: parked
            ia("e8", "u1", "c", "click", 7),           # last impression of c to u1 = R1 (rank 3)
        ])  # fmt: skip
        wait_until(lambda: redis_client.zcard(k.seen("u1")) == 4 and redis_client.hexists(k.impression("R9"), "p:e7"),
                   what="interactions applied")  # fmt: skip
        produce(settings, RECOMMENDATIONS_SERVED, [served("R9", "u3", "v1", "A", ["a"], t0 + 1000, tenant)])
        wait_until(lambda: ctr(redis_client, k.ctr("item", "a"))[1] == 2, what="parked click joined")
        labels = read_topic(settings, FEEDBACK_LABELED, expect=7)
    finally:
        svc.stop()

    expected = {
        ("item", "a"): (3, 2, 0), ("item", "b"): (1, 1, 1), ("item", "c"): (2, 2, 0), ("item", "d"): (2, 0, 0),
        ("variant", "A"): (6, 4, 1), ("variant", "B"): (2, 1, 0),
        ("model", "als:v1"): (6, 4, 1), ("model", "als:v2"): (2, 1, 0),
        ("vm", "A|als:v1"): (4, 3, 1), ("vm", "B|als:v1"): (2, 1, 0), ("vm", "A|als:v2"): (2, 1, 0),
    }  # fmt: skip
    assert {key: ctr(redis_client, k.ctr(*key)) for key in expected} == expected
    assert sorted((lab.request_id, lab.item_id, lab.label) for lab in labels) == sorted([
        ("R1", "b", 1), ("R1", "a", 0), ("R2", "c", 1), ("R3", "a", 1), ("R3", "d", 0), ("R1", "c", 1), ("R9", "a", 1),
    ])  # fmt: skip
    assert {m.decode() for m in redis_client.zrange(k.seen("u1"), 0, -1)} == {"a", "b", "c", "z"}
    assert redis_client.zscore(k.covisit("b"), "a") is not None  # u1 touched a and b within the window
    assert redis_client.hget(k.item_meta("c"), "categories") == b'["y"]'

    # replay everything from the beginning with a new consumer group: nothing may change
    before = snapshot(redis_client, tenant)
    again = FeedbackService(settings_factory(FeedbackSettings, feedback={"group_id": group_id + "-replay"})).start()
    try:
        wait_until(lambda: again.runner.processed >= 4 + 4 + 8, what="replay consumed")
    finally:
        again.stop()
    assert snapshot(redis_client, tenant) == before
    assert len(read_topic(settings, FEEDBACK_LABELED, expect=7)) == 7  # no label emitted twice


def test_trending_reflects_a_burst_while_long_windows_keep_the_steady_item(
    settings_factory, redis_client, tenant, group_id
):
    """Exists because trending is only useful if a short window reacts to a burst within seconds while
    the long windows and popularity still rank long-run favourites first (decay by event time)."""
    settings = settings_factory(FeedbackSettings, feedback={"group_id": group_id})
    k = Keys(tenant)
    now = now_ms()
    hour = 3_600_000
    produce(settings, CATALOG_ITEMS, [ItemUpdate("hot", tenant, "Hot", ["news"]),
                                      ItemUpdate("steady", tenant, "Steady", ["news"])])  # fmt: skip
    steady = [Interaction(f"s{i}", f"u{i % 7}", "steady", "click", None, now - 24 * hour - i * 2 * hour, tenant=tenant)
              for i in range(60)]  # fmt: skip
    burst = [Interaction(f"h{i}", f"v{i}", "hot", "click", None, now - 60_000 + i * 1000, tenant=tenant)
             for i in range(12)]  # fmt: skip
    svc = FeedbackService(settings).start()
    try:
        produce(settings, INTERACTIONS, steady)
        wait_until(lambda: redis_client.zscore(k.trending("7d"), "steady") is not None, what="steady counted")
        produce(settings, INTERACTIONS, burst)
        # the seen-items fast lane runs in its own group, so wait on the main consumer's own output
        wait_until(lambda: (sc := redis_client.zscore(k.trending("1h"), "hot")) is not None
                   and decayed(sc, now, 3600.0) > 11.8, what="burst counted")  # fmt: skip
    finally:
        svc.stop()
    top = lambda key: redis_client.zrevrange(key, 0, 0)[0].decode()  # noqa: E731
    assert top(k.trending("1h")) == "hot"
    assert top(k.trending("1h", "news")) == "hot"
    assert top(k.trending("7d")) == "steady"
    assert top(k.popularity()) == "steady"
    # the stored log-space score reads back as the decayed count: 12 clicks within the last minute
    hot_1h = decayed(redis_client.zscore(k.trending("1h"), "hot"), now, 3600.0)
    assert 11.8 < hot_1h <= 12.0
