"""The typed events and the Avro schemas cannot drift apart: same fields in the same order,
same optionality and defaults; every schema is documented and in the recmesh.events namespace."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from recmesh.core import events
from recmesh.core.codec import default_schema_dir, schema_store
from recmesh.core.events import EVENT_CLASSES, EVENT_TYPES, Interaction, ServedItem, from_record, to_record

LATEST = {cls: schema_store().latest(cls.SCHEMA) for cls in EVENT_CLASSES}
ALL_FILES = sorted(Path(default_schema_dir()).glob("*.avsc"))


def _fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return list(schema["fields"])


def _nullable(avro_type: Any) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_dataclass_fields_equal_the_newest_schema(cls: type[Any]) -> None:
    schema = LATEST[cls].raw
    assert [f.name for f in dataclasses.fields(cls)] == [f["name"] for f in _fields(schema)]


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda c: c.__name__)
def test_optionality_and_defaults_agree(cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls, vars(events))
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for f in _fields(LATEST[cls].raw):
        dc = by_name[f["name"]]
        optional = type(None) in typing.get_args(hints[f["name"]])
        assert optional == _nullable(f["type"]), f"{cls.__name__}.{f['name']}: nullability differs"
        if "default" in f:
            default = dc.default_factory() if dc.default_factory is not dataclasses.MISSING else dc.default
            assert default == f["default"], f"{cls.__name__}.{f['name']}: default differs from the schema"


def test_served_item_matches_its_nested_record() -> None:
    items = next(f for f in LATEST[events.RecommendationServed].raw["fields"] if f["name"] == "items")
    assert [f.name for f in dataclasses.fields(ServedItem)] == [f["name"] for f in items["type"]["items"]["fields"]]


def test_event_types_equal_the_enum_symbols() -> None:
    event_type = next(f for f in LATEST[Interaction].raw["fields"] if f["name"] == "event_type")
    assert tuple(event_type["type"]["symbols"]) == EVENT_TYPES


def _walk(schema: Any, path: str) -> typing.Iterator[tuple[str, dict[str, Any]]]:
    """Every named type and field in a schema, with a readable path."""
    if isinstance(schema, list):
        for s in schema:
            yield from _walk(s, path)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed"):
            yield f"{path}{schema['name']}", schema
            for f in schema.get("fields", []):
                yield f"{path}{schema['name']}.{f['name']}", f
                yield from _walk(f["type"], f"{path}{schema['name']}.{f['name']}/")
        for key in ("items", "values"):
            if key in schema:
                yield from _walk(schema[key], path)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_schema_file_is_documented_and_namespaced(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw["type"] == "record"
    assert raw.get("namespace") == "recmesh.events"
    undocumented = [name for name, node in _walk(raw, "") if not str(node.get("doc", "")).strip()]
    assert not undocumented, f"{path.name}: no doc on {undocumented}"


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_timestamps_carry_the_timestamp_millis_logical_type(path: Path) -> None:
    raw = json.loads(path.read_text())
    for f in raw["fields"]:
        if f["name"] == "timestamp" or f["name"].endswith(("_at", "_ts", "_start", "_end")):
            branches = f["type"] if isinstance(f["type"], list) else [f["type"]]
            logical = [b.get("logicalType") for b in branches if isinstance(b, dict)]
            assert logical == ["timestamp-millis"], f"{path.name}: {f['name']} is not timestamp-millis"


def test_every_record_has_an_event_class() -> None:
    assert set(schema_store().versions) == {cls.SCHEMA for cls in EVENT_CLASSES}


def test_records_convert_both_ways() -> None:
    ev = events.RecommendationServed("r", "u", items=[ServedItem("i", 1.0, 1, "als")], timestamp=5)
    rec = to_record(ev)
    assert rec["items"] == [{"item_id": "i", "score": 1.0, "rank": 1, "source": "als"}]
    assert from_record(events.RecommendationServed, rec) == ev
    it = Interaction("e", "u", "i", "view", timestamp=1)
    assert from_record(Interaction, to_record(it)) == it


def test_ids_and_clock() -> None:
    a, b = events.new_id(), events.new_id()
    assert a != b and len(a) == 32
    assert events.now_ms() > 1_600_000_000_000
