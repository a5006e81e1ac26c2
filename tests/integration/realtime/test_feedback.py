"""Feedback against the real broker and Redis: exact attribution counts, labels, replay, trending,
timeout negatives."""

from __future__ import annotations

import time

import orjson
import pytest

from recmesh.core.bus import Record
from recmesh.core.events import Interaction, ItemUpdate, RecommendationServed, ServedItem, now_ms
from recmesh.core.realtime import decayed
from recmesh.core.store import Keys
from recmesh.core.topics import CATALOG_ITEMS, FEEDBACK_LABELED, INTERACTIONS, RECOMMENDATIONS_SERVED
from recmesh.feedback.app import FeedbackService
from recmesh.feedback.handlers import FeedbackHandler, covisit_pairs
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


def test_impressions_nobody_clicked_yield_negatives_exactly_once_when_their_window_closes(
    settings_factory, redis_client, tenant, group_id
):
    """Exists because skip-above only labels lists that got a click: an ignored list is the most common
    negative example, and two replicas sweeping the same closed impressions must emit each label once —
    every shown item of an unclicked list, nothing more for a clicked one, and no positive for a click
    that arrives after the window."""
    window, delay = 3, 2
    settings = settings_factory(FeedbackSettings, feedback={
        "group_id": group_id, "attribution_window_s": window, "negatives_delay_s": delay,
        "sweep_interval_s": 0.05, "seen_lane_process": False,
    })  # fmt: skip
    k = Keys(tenant)
    t0 = now_ms()
    replicas = [FeedbackService(settings).start(), FeedbackService(settings).start()]
    try:
        wait_until(lambda: all(r.ready_check()[0] for r in replicas), what="both replicas ready")
        produce(settings, RECOMMENDATIONS_SERVED, [
            served("R1", "u1", "v1", "A", ["a", "b", "c"], t0, tenant),  # nothing clicked: a, b, c negative
            served("R2", "u2", "v1", "A", ["c", "d"], t0, tenant),       # d clicked: d positive, c skip-above
            served("R3", "u3", "v1", "A", ["a", "b"], t0, tenant),       # a clicked: b below it, no label
            served("R4", "u4", "v1", "A", ["e"], t0, tenant),            # clicked after the window: e negative
        ])  # fmt: skip
        wait_until(lambda: ctr(redis_client, k.ctr("variant", "A"))[0] == 8, what="impressions stored")
        produce(settings, INTERACTIONS, [
            Interaction("e1", "u2", "d", "click", None, t0 + 1000, None, "R2", {}, tenant),
            Interaction("e2", "u3", "a", "click", None, t0 + 1000, None, "R3", {}, tenant),
        ])  # fmt: skip
        wait_until(lambda: ctr(redis_client, k.ctr("variant", "A"))[1] == 2, what="clicks attributed")
        due = orjson.loads(redis_client.hget(k.impression("R4"), "meta"))["due"]
        time.sleep(max(0.0, (due - now_ms()) / 1000 + 0.2))
        # the window has closed, the sweep waits `delay` more: the impression is still stored, not joinable
        produce(settings, INTERACTIONS, [Interaction("e3", "u4", "e", "click", None, now_ms(), None, "R4", {}, tenant)])
        wait_until(lambda: redis_client.zcard(k.impressions_due()) == 0, timeout=window + delay + 10, what="sweep")
        labels = read_topic(settings, FEEDBACK_LABELED, expect=7)
    finally:
        for r in replicas:
            r.stop()
    assert sorted((lab.request_id, lab.item_id, lab.label) for lab in labels) == sorted([
        ("R1", "a", 0), ("R1", "b", 0), ("R1", "c", 0), ("R2", "d", 1), ("R2", "c", 0), ("R3", "a", 1), ("R4", "e", 0),
    ])  # fmt: skip
    assert ctr(redis_client, k.ctr("item", "e")) == (1, 0, 0)  # the late click counted nothing
    assert not any(redis_client.exists(k.impression(f"R{n}")) for n in range(1, 5))  # swept: the hashes are gone


def test_co_visitation_does_not_depend_on_how_far_ahead_the_seen_fast_lane_is(settings_factory, redis_client, tenant):
    """Exists because the seen fast lane runs ahead of the counting lane (that is its purpose), writing
    later timestamps of items a user touches again: co-visitation computed from the seen set lost those
    pairs, so a lagging lane or a replay after a crash counted different pairs than an on-time pass."""
    settings = settings_factory(FeedbackSettings)
    h = FeedbackHandler(redis_client, settings.redis, settings.feedback, tenant)
    t0 = now_ms()
    events = [Interaction(f"e{n}", "u", f"i{n % 5}", "click", None, t0 + n * 1000, tenant=tenant) for n in range(12)]
    recs = [Record("interactions", 0, n, "u", e, e.timestamp) for n, e in enumerate(events)]
    h.handle_seen(recs)  # the fast lane has seen everything already
    for lo in range(0, len(recs), 3):  # the counting lane follows, three events per batch
        h.handle_interactions(recs[lo : lo + 3])
    want = covisit_pairs(events, [], settings.feedback)
    got = {(f"i{j}", n.decode()): c for j in range(5)
           for n, c in redis_client.zrange(Keys(tenant).covisit(f"i{j}"), 0, -1, withscores=True)}  # fmt: skip
    assert got == want
