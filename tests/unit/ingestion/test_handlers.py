"""Body parsing and per-event validation of the HTTP API (pure functions)."""

from __future__ import annotations

import orjson
import pytest

from recmesh.ingestion.handlers import (
    EventValidator,
    MalformedBody,
    Reject,
    parse_body,
    validate_catalog_batch,
    validate_item,
    validate_user,
)
from recmesh.ingestion.settings import EventTypeRule, IngestionSection

NOW = 1_700_000_000_000


def test_parse_body_object_array_and_ndjson():
    assert parse_body(b'{"a": 1}', "application/json") == ([{"a": 1}], True)
    assert parse_body(b'[{"a": 1}, {"a": 2}]', None) == ([{"a": 1}, {"a": 2}], False)
    body = b'{"a": 1}\n\n{"a": 2}\r\n{"a": 3}\n'
    assert parse_body(body, "application/x-ndjson; charset=utf-8") == ([{"a": 1}, {"a": 2}, {"a": 3}], False)


def test_malformed_json_reports_line_column_and_position():
    with pytest.raises(MalformedBody) as ei:
        parse_body(b'[{"a": 1},\n {"a": }]', "application/json")
    err = ei.value
    assert err.http_status == 400
    assert err.details["line"] == 2 and err.details["column"] == 8 and err.details["position"] == 18
    assert "line 2 column 8" in err.message


def test_malformed_ndjson_reports_the_line():
    with pytest.raises(MalformedBody) as ei:
        parse_body(b'{"a": 1}\n{"a": 2}\n{"a" 3}\n', "application/x-ndjson")
    assert ei.value.details["line"] == 3


def test_empty_body_is_malformed():
    with pytest.raises(MalformedBody):
        parse_body(b"  \n", "application/json")


def _validator(**kw):
    return EventValidator(IngestionSection(**kw))


def test_mixed_batch_keeps_valid_events_and_rejects_by_index():
    entries = [
        {"user_id": "u1", "item_id": "i1", "event_type": "click", "event_id": "e1", "timestamp": NOW - 5},
        {"user_id": "u2", "item_id": "i2", "event_type": "view", "colour": "red"},
        {"item_id": "i3", "event_type": "view"},
        {"user_id": 42, "item_id": 7, "event_type": "rating", "value": 4.5},
        {"user_id": "u5", "item_id": "i5", "event_type": "teleport"},
        {"user_id": "u6", "item_id": "i6", "event_type": "view", "timestamp": NOW + 3_600_000},
        "not an object",
        {"user_id": "u8", "item_id": "i8", "event_type": "view", "value": "high"},
        {"user_id": "u9", "item_id": "i9", "event_type": "buy", "timestamp": "2023-11-14T22:13:20Z"},
    ]
    v = _validator().batch(entries, "acme", now=NOW)
    assert v.indices == [0, 3, 8]
    assert [r["index"] for r in v.rejected] == [1, 2, 4, 5, 6, 7]
    errors = {r["index"]: r["error"] for r in v.rejected}
    assert errors[1] == "unknown field 'colour'"
    assert errors[2] == "missing field 'user_id'"
    assert "teleport" in errors[4]
    assert "future" in errors[5]
    assert v.reasons == {"unknown_field": 1, "missing_field": 1, "invalid_event_type": 1,
                         "future_timestamp": 1, "not_object": 1, "invalid_type": 1}  # fmt: skip
    first, rating, bought = v.events
    assert (first.event_id, first.timestamp, first.tenant, first.source) == ("e1", NOW - 5, "acme", "api")
    assert (rating.user_id, rating.item_id, rating.value, rating.timestamp) == ("42", "7", 4.5, NOW)
    assert len(rating.event_id) == 32  # generated
    assert v.client_ids == [True, False, False]
    assert bought.event_type == "purchase"  # alias
    assert bought.timestamp == 1_700_000_000_000  # ISO 8601 → epoch ms


def test_unknown_fields_are_all_named():
    with pytest.raises(Reject) as ei:
        _validator().event({"user_id": "u", "item_id": "i", "event_type": "view", "b": 1, "a": 2}, "t", NOW)
    assert ei.value.message == "unknown fields 'a', 'b'"


def test_event_tenant_wins_over_request_tenant_and_context_is_stringified():
    ev, cid = _validator().event(
        {"user_id": "u", "item_id": "i", "event_type": "view", "tenant": "other",
         "context": {"page": "home", "pos": 3, "ab": True}}, "acme", NOW)  # fmt: skip
    assert ev.tenant == "other" and not cid
    assert ev.context == {"page": "home", "pos": "3", "ab": "true"}


def test_skew_limit_is_configurable():
    ev = {"user_id": "u", "item_id": "i", "event_type": "view", "timestamp": NOW + 10_000}
    assert _validator(max_future_skew_ms=60_000).batch([ev], "t", NOW).indices == [0]
    assert _validator(max_future_skew_ms=1_000).batch([ev], "t", NOW).indices == []


def test_value_rules_rewrite_types():
    rules = [EventTypeRule.parse("rating>=4:like"), EventTypeRule.parse("rating<2:dislike")]
    v = EventValidator(IngestionSection(event_type_rules=rules))
    evs = [{"user_id": "u", "item_id": "i", "event_type": "rating", "value": x} for x in (5, 4, 3, 1.5)]
    assert [e.event_type for e in v.batch(evs, "t", NOW).events] == ["like", "like", "rating", "dislike"]


def test_bool_and_nan_like_values_are_rejected():
    v = _validator()
    for bad in (
        {"value": True},
        {"user_id": True},
        {"timestamp": True},
        {"timestamp": -1},
        {"event_type": ["x"]},
        {"event_id": {"a": 1}},
        {"value": "1"},
        {"session_id": 3},
        {"context": {"a": [1]}},
    ):
        ev = {"user_id": "u", "item_id": "i", "event_type": "view", **bad}
        assert v.batch([ev], "t", NOW).indices == [], bad


def test_long_ids_are_rejected():
    v = _validator(max_id_length=8)
    out = v.batch([{"user_id": "x" * 9, "item_id": "i", "event_type": "view"}], "t", NOW)
    assert out.rejected == [{"index": 0, "error": "'user_id' is longer than 8 characters"}]


def test_items_and_users():
    item = validate_item({"title": "Shoe", "categories": ["a", "b"], "attributes": {"price": 9.5}}, "t", NOW,
                         item_id="sku1")  # fmt: skip
    assert (item.item_id, item.title, item.categories, item.attributes, item.updated_at) == (
        "sku1", "Shoe", ["a", "b"], {"price": "9.5"}, NOW)  # fmt: skip
    with pytest.raises(Reject, match="does not match"):
        validate_item({"item_id": "other"}, "t", NOW, item_id="sku1")
    with pytest.raises(Reject, match="unknown field 'price'"):
        validate_item({"price": 3}, "t", NOW, item_id="sku1")
    user = validate_user({"segments": "vip", "created_at": "2024-01-01T00:00:00+00:00"}, "t", NOW, user_id="u1")
    assert (user.segments, user.created_at) == (["vip"], 1_704_067_200_000)
    batch = validate_catalog_batch([{"item_id": "a"}, {"title": "no id"}, {"item_id": "c", "available": "no"}],
                                   "item", "t", NOW)  # fmt: skip
    assert batch.indices == [0] and [r["index"] for r in batch.rejected] == [1, 2]


def test_a_full_batch_of_integer_ids_validates():
    body = orjson.dumps([{"user_id": i, "item_id": "a", "event_type": "view"} for i in range(10_000)])
    entries, _ = parse_body(body, "application/json")
    assert len(_validator().batch(entries, "t").events) == 10_000
