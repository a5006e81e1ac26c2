"""Log-space exponential decay, the anonymous-actor rule and the recent-items format."""

from __future__ import annotations

import math

import pytest

from recmesh.core.realtime import (
    T0_MS,
    actor_id,
    decayed,
    encode_categories,
    log_weight,
    logaddexp,
    parse_categories,
    parse_recent,
    recent_entry,
)

HOUR_S = 3600.0
HOUR_MS = 3_600_000


def _stored(events: list[tuple[float, int]], half_life_s: float) -> float:
    s = None
    for w, ts in events:
        s = logaddexp(s, log_weight(w, ts, half_life_s))
    assert s is not None
    return s


def test_decayed_value_equals_the_direct_sum_of_halved_weights():
    now = T0_MS + 500 * HOUR_MS
    events = [(1.0, now - 2 * HOUR_MS), (4.0, now - HOUR_MS), (0.5, now)]
    direct = sum(w * 0.5 ** ((now - ts) / HOUR_MS) for w, ts in events)
    assert decayed(_stored(events, HOUR_S), now, HOUR_S) == pytest.approx(direct, rel=1e-12)
    # the same score read an hour later is half as large: it decays without being rewritten
    assert decayed(_stored(events, HOUR_S), now + HOUR_MS, HOUR_S) == pytest.approx(direct / 2, rel=1e-12)


def test_order_of_stored_scores_is_the_order_of_decayed_counts_at_any_time():
    now = T0_MS + 10_000 * HOUR_MS
    old_many = _stored([(1.0, now - 24 * HOUR_MS)] * 100, HOUR_S)  # 100 events a day ago
    new_few = _stored([(1.0, now - HOUR_MS)] * 2, HOUR_S)  # 2 events an hour ago
    assert new_few > old_many
    assert decayed(new_few, now, HOUR_S) > decayed(old_many, now, HOUR_S)


def test_merge_order_does_not_matter_and_nothing_overflows_decades_later():
    ts = T0_MS + 30 * 365 * 24 * HOUR_MS  # 30 years of one-hour half-lives: exp() would overflow
    a = _stored([(1.0, ts), (2.0, ts - 5), (3.0, ts - 7)], HOUR_S)
    b = _stored([(3.0, ts - 7), (1.0, ts), (2.0, ts - 5)], HOUR_S)
    assert math.isfinite(a)
    assert a == pytest.approx(b, rel=1e-15)
    direct = 1.0 + 2.0 * 0.5 ** (5 / HOUR_MS) + 3.0 * 0.5 ** (7 / HOUR_MS)
    assert decayed(a, ts, HOUR_S) == pytest.approx(direct, rel=1e-9)


def test_anonymous_events_are_attributed_to_their_session():
    assert actor_id("u1", "s1", {}) == "u1"
    assert actor_id("", "s1", {}) == "s1"
    assert actor_id("u1", "s1", {"anonymous": "true"}) == "s1"
    assert actor_id("", None, {}) is None


def test_recent_entries_and_categories_round_trip():
    assert parse_recent(recent_entry("i1", "click", 123)) == {"item": "i1", "type": "click", "ts": 123}
    assert parse_recent(b"bare-item")["item"] == "bare-item"
    assert parse_categories(encode_categories(["a", "b c"])) == ["a", "b c"]
    assert parse_categories(b"a, b") == ["a", "b"]
    assert parse_categories(None) == []
