"""Cleaning and normalisation of imported rows: every step counts what it dropped and why."""

from __future__ import annotations

from datetime import UTC, datetime

from recmesh.ingestion.cleaning import Cleaner, CleaningOptions, derived_event_id
from recmesh.ingestion.settings import EventTypeRule, IngestionSection

NOW = 1_700_000_000_000


def _clean(rows, **kw):
    c = Cleaner(CleaningOptions(tenant="acme", **kw), now=NOW)
    return c.interactions(rows), c.report


def test_each_step_drops_and_counts_with_a_reason():
    rows = [
        {"user_id": "1", "item_id": "10", "event_type": "click", "timestamp": "1699999999"},
        {"user_id": None, "item_id": "10", "event_type": "click"},
        {"user_id": float("nan"), "item_id": "10"},
        {"user_id": "  ", "item_id": "10"},
        {"user_id": 1.5, "item_id": "10"},
        {"user_id": "1", "item_id": "10", "event_type": "teleport"},
        {"user_id": "1", "item_id": "10", "timestamp": "yesterday"},
        {"user_id": "1", "item_id": "10", "timestamp": NOW + 86_400_000},
        {"user_id": "1", "item_id": "10", "event_type": "click", "timestamp": "1699999999"},  # duplicate of 0
        {"user_id": "1", "item_id": "10", "value": "abc"},
    ]
    kept, rep = _clean(rows)
    assert len(kept) == 1 and rep.read == 10 and rep.kept == 1
    assert dict(rep.dropped) == {"missing_id": 3, "invalid_id": 1, "invalid_event_type": 1,
                                 "invalid_timestamp": 1, "future_timestamp": 1, "duplicate": 1,
                                 "invalid_value": 1}  # fmt: skip
    ev = kept[0]
    assert (ev.user_id, ev.item_id, ev.timestamp, ev.tenant, ev.source) == ("1", "10", 1_699_999_999_000,
                                                                             "acme", "import")  # fmt: skip


def test_ids_become_strings_and_timestamps_utc_ms():
    rows = [
        {"user_id": 7, "item_id": 3.0, "timestamp": 1_700_000_000},  # seconds (auto)
        {"user_id": "a", "item_id": "b", "timestamp": 1_699_000_000_123},  # ms
        {"user_id": "a", "item_id": "c", "timestamp": "2023-11-14T22:13:20+01:00"},
        {"user_id": "a", "item_id": "d", "timestamp": datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)},
        {"user_id": "a", "item_id": "e", "timestamp": "2023-11-14 22:13:20"},  # naive = UTC
        {"user_id": "a", "item_id": "f"},  # missing → import time
    ]
    kept, rep = _clean(rows)
    assert [(e.user_id, e.item_id) for e in kept][:1] == [("7", "3")]
    assert [e.timestamp for e in kept] == [1_700_000_000_000, 1_699_000_000_123, 1_699_996_400_000,
                                           1_700_000_000_000, 1_700_000_000_000, NOW]  # fmt: skip
    assert rep.defaulted_timestamps == 1


def test_explicit_timestamp_unit():
    kept, _ = _clean([{"user_id": 1, "item_id": 1, "timestamp": 1_000}], ts_unit="s")
    assert kept[0].timestamp == 1_000_000
    kept, _ = _clean([{"user_id": 1, "item_id": 1, "timestamp": 1_000}], ts_unit="ms")
    assert kept[0].timestamp == 1_000


def test_out_of_range_values_are_dropped_or_clamped():
    rows = [{"user_id": 1, "item_id": i, "event_type": "rating", "value": v} for i, v in enumerate((0, 3, 9))]
    kept, rep = _clean(rows, value_min=1, value_max=5)
    assert [e.value for e in kept] == [3.0] and rep.dropped["out_of_range"] == 2
    kept, rep = _clean(rows, value_min=1, value_max=5, out_of_range="clamp")
    assert [e.value for e in kept] == [1.0, 3.0, 5.0] and rep.clamped == 2 and not rep.dropped


def test_rating_rules_remap_and_count():
    rules = (EventTypeRule.parse("rating>=4:like"),)
    rows = [{"user_id": 1, "item_id": i, "event_type": "rating", "value": v} for i, v in enumerate((5, 4, 2))]
    kept, rep = _clean(rows, rules=rules)
    assert [e.event_type for e in kept] == ["like", "like", "rating"]
    assert dict(rep.remapped) == {"rating→like": 2}


def test_bot_filter_drops_events_beyond_n_per_minute():
    base = 1_699_999_980_000  # minute boundary
    rows = [{"user_id": "bot", "item_id": i, "timestamp": base + i * 10} for i in range(10)]
    rows += [{"user_id": "bot", "item_id": 99, "timestamp": base + 60_000}]  # next minute
    rows += [{"user_id": "human", "item_id": i, "timestamp": base + i} for i in range(3)]
    kept, rep = _clean(rows, bot_max_events_per_minute=3)
    assert rep.dropped["bot"] == 7
    assert sum(e.user_id == "bot" for e in kept) == 4 and sum(e.user_id == "human" for e in kept) == 3


def test_dedupe_by_given_event_id_across_chunks_and_derived_ids_are_stable():
    c = Cleaner(CleaningOptions(), now=NOW)
    a = c.interactions([{"event_id": "x", "user_id": 1, "item_id": 1, "timestamp": 1}])
    b = c.interactions([{"event_id": "x", "user_id": 2, "item_id": 2, "timestamp": 2}])
    assert len(a) == 1 and b == [] and c.report.dropped["duplicate"] == 1
    assert derived_event_id("t", "u", "i", "view", 1, None) == derived_event_id("t", "u", "i", "view", 1, None)
    assert derived_event_id("t", "u", "i", "view", 1, None) != derived_event_id("t", "u", "i", "view", 2, None)


def test_options_from_settings_section():
    s = IngestionSection(value_min=1, bot_max_events_per_minute=5)
    o = CleaningOptions.from_section(s, tenant="x", ts_unit=None)
    assert (o.value_min, o.bot_max_events_per_minute, o.tenant, o.ts_unit) == (1, 5, "x", "auto")
    assert o.aliases["buy"] == "purchase"


def test_catalog_rows():
    c = Cleaner(CleaningOptions(tenant="acme"), now=NOW)
    items = c.items([
        {"item_id": 1, "title": "Toy Story", "categories": "Animation|Comedy", "attributes": {"year": 1995}},
        {"item_id": None, "title": "no id"},
        {"item_id": 1, "title": "dup"},
        {"item_id": "2", "categories": ["A"], "available": "false", "attributes": {"x": float("nan")}},
    ])  # fmt: skip
    assert [(i.item_id, i.title, i.categories, i.attributes, i.available) for i in items] == [
        ("1", "Toy Story", ["Animation", "Comedy"], {"year": "1995"}, True),
        ("2", None, ["A"], {}, False),
    ]
    assert dict(c.report.dropped) == {"missing_id": 1, "duplicate": 1}
    users = Cleaner(CleaningOptions(), now=NOW).users([{"user_id": 5, "attributes": {"age": "24"}}])
    assert (users[0].user_id, users[0].attributes, users[0].updated_at) == ("5", {"age": "24"}, NOW)
