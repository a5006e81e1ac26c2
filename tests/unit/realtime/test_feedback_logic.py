"""Feedback's pure logic: counter keys and weights, co-visitation windows, attribution joins, timeout negatives."""

from __future__ import annotations

import pytest

from recmesh.core.events import Interaction
from recmesh.core.realtime import T0_MS, decayed
from recmesh.core.store import Keys
from recmesh.feedback.handlers import (
    Engagement,
    Impression,
    attribute,
    counter_updates,
    covisit_pairs,
    label_id,
    timeout_negatives,
)
from recmesh.feedback.settings import FeedbackSection

MIN = 60_000


def ev(item: str, ts: int, et: str = "click", user: str = "u", eid: str | None = None) -> Interaction:
    return Interaction(eid or f"{item}-{ts}-{et}", user, item, et, None, ts, tenant="t")


def test_counter_updates_cover_popularity_every_window_and_categories_and_skip_non_positive():
    s = FeedbackSection()
    k = Keys("t")
    now = T0_MS + 1000 * MIN
    out = counter_updates(
        [ev("a", now), ev("a", now), ev("b", now, "dislike"), ev("c", now, "view")],
        lambda t, i: {"a": ["x"]}.get(i, []), s, lambda t: k,
    )  # fmt: skip
    expected_keys = (
        {k.popularity()}
        | {k.trending(w) for w in s.trending_windows}
        | {k.trending(w, "x") for w in s.trending_windows}
    )
    assert set(out) == expected_keys
    assert "b" not in out[k.popularity()]  # dislike weighs 0: never counted
    # two clicks (weight 1 each) at `now` = 2.0; one view (0.5)
    assert decayed(out[k.popularity()]["a"], now, s.popularity_half_life_s) == pytest.approx(2.0)
    assert decayed(out[k.trending("1h")]["c"], now, 3600) == pytest.approx(0.5)
    assert set(out[k.trending("1d", "x")]) == {"a"}


def test_covisit_pairs_respect_the_time_window_both_directions_and_the_neighbour_cap():
    s = FeedbackSection(covisit_window_s=30 * 60, covisit_max_neighbors_per_event=2)
    t = 100 * MIN
    history = [("old", t - 31 * MIN), ("h1", t - 29 * MIN), ("h2", t - 10 * MIN), ("h3", t - 5 * MIN)]
    pairs = covisit_pairs([ev("new", t)], history, s)
    # "old" is outside the window; the cap keeps the 2 most recent of h1..h3
    assert pairs == {("new", "h3"): 1, ("h3", "new"): 1, ("new", "h2"): 1, ("h2", "new"): 1}


def test_covisit_pairs_within_one_batch_and_ignore_self_and_non_positive_events():
    s = FeedbackSection(covisit_window_s=60)
    t = 10 * MIN
    pairs = covisit_pairs([ev("b", t + 1000), ev("a", t), ev("a", t + 2000), ev("c", t + 3000, "skip")], [], s)
    # b pairs with a (earlier), the second a pairs with b; a never pairs with itself; skip creates nothing
    assert pairs == {("b", "a"): 2, ("a", "b"): 2}


def _imp() -> Impression:
    return Impression("r1", "t", "u", "als", "v1", "B", 1_000, {"i1": 1, "i2": 2, "i3": 3, "i4": 4})


def test_attribution_click_labels_positive_and_skip_above_negatives_once():
    s = FeedbackSection()
    marks: set[str] = set()
    att = attribute(_imp(), marks, [Engagement("e1", "i3", "click", 4_000)], s)
    assert att.clicks == ["i3"] and att.conversions == []
    assert [(lab.item_id, lab.label, lab.rank) for lab in att.labels] == [("i3", 1, 3), ("i1", 0, 1), ("i2", 0, 2)]
    assert att.lags_s == [3.0]
    assert att.labels[0].label_id == label_id("r1", "i3", 1)
    assert att.labels[0].model_version == "als:v1" and att.labels[0].variant == "B"
    # a second click on i3 and a purchase of i3: no new click, one conversion, no new labels
    att2 = attribute(_imp(), marks, [Engagement("e2", "i3", "click", 5_000),
                                     Engagement("e3", "i3", "purchase", 6_000)], s)  # fmt: skip
    assert att2.clicks == [] and att2.conversions == ["i3"] and att2.labels == []
    # clicking i2 later: i2 was labelled negative already; a positive follows, i1 is not re-labelled
    att3 = attribute(_imp(), marks, [Engagement("e4", "i2", "click", 7_000)], s)
    assert [(lab.item_id, lab.label) for lab in att3.labels] == [("i2", 1)]


def test_attribution_ignores_views_and_items_not_in_the_list_and_purchase_implies_click():
    s = FeedbackSection()
    att = attribute(_imp(), set(), [Engagement("e1", "i2", "view", 2_000), Engagement("e2", "zz", "click", 2_000),
                                    Engagement("e3", "i1", "purchase", 3_000)], s)  # fmt: skip
    assert att.clicks == ["i1"] and att.conversions == ["i1"]
    assert [(lab.item_id, lab.label) for lab in att.labels] == [("i1", 1)]  # rank 1: nothing above


def test_an_impression_without_any_click_gets_every_item_as_a_negative_when_its_window_closes():
    imp = Impression("r1", "t", "u", "als", "v1", "B", 1_000, {"i3": 3, "i1": 1, "i2": 2}, due=61_000)
    labels = timeout_negatives(imp, set(), imp.due)
    assert [(lab.item_id, lab.label, lab.rank, lab.event_type) for lab in labels] == [
        ("i1", 0, 1, None), ("i2", 0, 2, None), ("i3", 0, 3, None),
    ]  # fmt: skip
    assert labels[0].label_id == label_id("r1", "i1", 0) and labels[0].timestamp == 61_000
    assert labels[0].impression_ts == 1_000 and labels[0].model_version == "als:v1" and labels[0].variant == "B"
    # a conversion-only mark is not a click; a parked engagement field is not either
    assert len(timeout_negatives(imp, {"v:i2", "p:e9"}, 61_000)) == 3


def test_a_clicked_impression_gets_no_timeout_negatives_beyond_its_skip_above_ones():
    s = FeedbackSection()
    imp = _imp()
    marks: set[str] = set()
    att = attribute(imp, marks, [Engagement("e1", "i2", "click", 2_000)], s)
    assert [(lab.item_id, lab.label) for lab in att.labels] == [("i2", 1), ("i1", 0)]
    assert timeout_negatives(imp, marks, 9_000) == []  # i3, i4 (below the click) stay unlabeled; i1 once
    # an item already labeled negative is never labeled again
    assert [lab.item_id for lab in timeout_negatives(imp, {"n:i1"}, 9_000)] == ["i2", "i3", "i4"]


def test_the_window_deadline_travels_with_the_stored_impression():
    imp = Impression("r1", "t", "u", None, None, "control", 5, {"a": 1}, due=10_000)
    back = Impression.from_meta("r1", "t", imp.meta_json())
    assert back == imp
    assert not back.closed(10_000) and back.closed(10_001)
    legacy = Impression.from_meta("r1", "t", b'{"user": "u", "ts": 5, "items": [["a", 1]]}')
    assert legacy.due is None and not legacy.closed(10**15)  # stored before deadlines: its TTL governs
