"""Every released schema version stays readable both ways (the CI gate for schema changes),
and the checker really fails on incompatible changes (so a green run means something)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recmesh.core.codec import default_schema_dir, schema_store
from recmesh.core.schema_compat import check_dir, main

SCHEMAS = Path(default_schema_dir())


def test_every_consecutive_pair_of_versions_is_backward_and_forward_compatible() -> None:
    multi = [name for name, vs in schema_store().versions.items() if len(vs) > 1]
    assert multi, "no record has two versions: the check below would be vacuous"
    assert [str(p) for p in check_dir(SCHEMAS)] == []


def _evolve(
    tmp_path: Path,
    record: str,
    change: Callable[[dict[str, Any]], None],
    base: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Write the newest version of ``record`` (after ``base``) as v1 and a ``change``d copy as v2."""
    raw = json.loads(schema_store().latest(f"recmesh.events.{record}").path.read_text())
    if base is not None:
        base(raw)
    (tmp_path / f"{record}.v1.avsc").write_text(json.dumps(raw))
    change(raw)
    (tmp_path / f"{record}.v2.avsc").write_text(json.dumps(raw))
    return tmp_path


def _field(raw: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in raw["fields"] if f["name"] == name)


def _no_enum_default(s: dict[str, Any]) -> None:
    _field(s, "event_type")["type"].pop("default")


INCOMPATIBLE: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "new required field": (
        lambda s: s["fields"].append({"name": "score", "type": "double", "doc": "x"}), "backward"),
    "removed required field": (lambda s: s["fields"].remove(_field(s, "user_id")), "forward"),
    "changed type": (lambda s: _field(s, "value").__setitem__("type", ["null", "string"]), "backward"),
    "removed enum symbol, no enum default": (
        lambda s: _field(s, "event_type")["type"]["symbols"].remove("skip"), "backward"),
    "new enum symbol, no enum default": (
        lambda s: _field(s, "event_type")["type"]["symbols"].append("zoom"), "forward"),
    "widened union": (lambda s: _field(s, "value").__setitem__("type", ["null", "double", "string"]), "forward"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(INCOMPATIBLE))
def test_incompatible_changes_are_detected(tmp_path: Path, case: str) -> None:
    change, direction = INCOMPATIBLE[case]
    base = _no_enum_default if "no enum default" in case else None
    problems = check_dir(_evolve(tmp_path, "Interaction", change, base))
    assert problems, f"{case} was not detected"
    assert direction in {p.direction for p in problems}
    assert main([str(tmp_path)]) == 1


COMPATIBLE: dict[str, Callable[[dict[str, Any]], None]] = {
    "new field with default": lambda s: s["fields"].append(
        {"name": "score", "type": ["null", "double"], "default": None, "doc": "x"}),
    # With an enum default the Avro rules map an unknown symbol to it, both ways.
    "new enum symbol, enum default": lambda s: _field(s, "event_type")["type"]["symbols"].append("zoom"),
    "removed enum symbol, enum default": lambda s: _field(s, "event_type")["type"]["symbols"].remove("skip"),
    "doc change": lambda s: _field(s, "item_id").__setitem__("doc", "another doc"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(COMPATIBLE))
def test_compatible_changes_pass(tmp_path: Path, case: str) -> None:
    assert [str(p) for p in check_dir(_evolve(tmp_path, "Interaction", COMPATIBLE[case]))] == []


def test_nested_records_are_checked(tmp_path: Path) -> None:
    def change(s: dict[str, Any]) -> None:
        _field(s, "items")["type"]["items"]["fields"].append({"name": "extra", "type": "string", "doc": "x"})

    problems = check_dir(_evolve(tmp_path, "RecommendationServed", change))
    assert {p.direction for p in problems} == {"backward"}
