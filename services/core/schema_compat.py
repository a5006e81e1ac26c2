"""Schema evolution check: every released version must stay readable both ways.

For each record with more than one ``<Record>.v<N>.avsc`` in the schema directory, every
consecutive pair (old, new) is checked by actually resolving data, not by comparing JSON:

- **backward**: records written with ``old`` are read with ``new`` as the reader schema;
- **forward**: records written with ``new`` are read with ``old`` as the reader schema.

Samples fill every field (each union branch and each enum symbol appears in some sample,
collections are non-empty), so a new field without a default, a removed field the old reader
still requires, a narrowed type or a dropped enum symbol all fail resolution. Values of the
fields both versions share must survive the trip unchanged.

CI runs it through ``tests/unit/test_schemas_compat.py``; ``python -m recmesh.core.schema_compat
[DIR]`` prints the problems and exits 1 when there are any.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro

from recmesh.core.codec import SchemaStore, SchemaVersion, _strip_logical

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


@dataclass(frozen=True)
class Problem:
    """One failed resolution between two versions of a record."""

    record: str
    old: int
    new: int
    direction: str  # "backward" (old writer → new reader) or "forward" (new writer → old reader)
    detail: str

    def __str__(self) -> str:
        return f"{self.record} v{self.old}→v{self.new} {self.direction}: {self.detail}"


class _Sampler:
    """Builds sample datums for one schema; sample ``k`` picks union branch / enum symbol ``k``."""

    def __init__(self, schema: Any) -> None:
        self.named: dict[str, Any] = {}
        self._collect(schema, "")

    def _collect(self, schema: Any, namespace: str) -> None:
        if isinstance(schema, list):
            for s in schema:
                self._collect(s, namespace)
        elif isinstance(schema, dict):
            t = schema.get("type")
            if t in ("record", "enum", "fixed", "error"):
                ns = schema.get("namespace", namespace)
                name = schema["name"]
                full = name if "." in name else f"{ns}.{name}".lstrip(".")
                self.named[full] = schema
                self.named.setdefault(name, schema)
                for f in schema.get("fields", []):
                    self._collect(f["type"], ns)
            elif t == "array":
                self._collect(schema["items"], namespace)
            elif t == "map":
                self._collect(schema["values"], namespace)

    def variants(self, schema: Any) -> int:
        """How many samples are needed so every union branch and enum symbol shows up."""
        most = 2
        for s in self.named.values():
            if s.get("type") == "enum":
                most = max(most, len(s["symbols"]))
        for u in _unions(schema):
            most = max(most, len(u))
        return most

    def sample(self, schema: Any, k: int) -> Any:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _primitive(schema, k)
            return self.sample(self.named[schema], k)
        if isinstance(schema, list):
            # Non-null branches first, so sample 0 fills every optional field.
            branches = [b for b in schema if b != "null"] + [b for b in schema if b == "null"]
            return self.sample(branches[k % len(branches)], k)
        t = schema["type"]
        if t in _PRIMITIVES:
            return _primitive(t, k)
        if t in ("record", "error"):
            return {f["name"]: self.sample(f["type"], k) for f in schema["fields"]}
        if t == "enum":
            return schema["symbols"][k % len(schema["symbols"])]
        if t == "array":
            return [self.sample(schema["items"], k), self.sample(schema["items"], k + 1)]
        if t == "map":
            return {"k0": self.sample(schema["values"], k), "k1": self.sample(schema["values"], k + 1)}
        if t == "fixed":
            return bytes([k % 256]) * int(schema["size"])
        raise ValueError(f"unsupported schema type {t!r}")


def _primitive(t: str, k: int) -> Any:
    return {
        "null": None,
        "boolean": k % 2 == 0,
        "int": 7 + k,
        "long": 1_700_000_000_000 + k,
        "float": 1.5 + k,
        "double": 2.25 + k,
        "bytes": b"b%d" % k,
        "string": f"s{k}",
    }[t]


def _unions(schema: Any) -> list[list[Any]]:
    out: list[list[Any]] = []
    if isinstance(schema, list):
        out.append(schema)
        for s in schema:
            out += _unions(s)
    elif isinstance(schema, dict):
        for f in schema.get("fields", []):
            out += _unions(f["type"])
        for key in ("items", "values"):
            if key in schema:
                out += _unions(schema[key])
    return out


def _resolve(writer_raw: dict[str, Any], reader_raw: dict[str, Any]) -> list[str]:
    """Write every sample with ``writer_raw`` and read it back with ``reader_raw``.

    Returns distinct problems (the first sample showing each)."""
    writer_schema = _strip_logical(writer_raw)
    reader_schema = _strip_logical(reader_raw)
    writer = fastavro.parse_schema(writer_schema, named_schemas={})
    reader = fastavro.parse_schema(reader_schema, named_schemas={})
    shared = {f["name"] for f in writer_schema["fields"]} & {f["name"] for f in reader_schema["fields"]}
    same_type = {
        f["name"]
        for f in reader_schema["fields"]
        if f["name"] in shared
        and json.dumps(f["type"], sort_keys=True)
        == json.dumps(next(w["type"] for w in writer_schema["fields"] if w["name"] == f["name"]), sort_keys=True)
    }
    sampler = _Sampler(writer_schema)
    problems: list[str] = []
    for k in range(sampler.variants(writer_schema)):
        datum = sampler.sample(writer_schema, k)
        buf = io.BytesIO()
        try:
            fastavro.schemaless_writer(buf, writer, datum)
        except Exception as exc:  # a sampler bug, reported rather than hidden
            problems.append(f"sample {k} not writable: {type(exc).__name__}: {exc}")
            continue
        buf.seek(0)
        try:
            out = fastavro.schemaless_reader(buf, writer, reader)
        except Exception as exc:  # SchemaResolutionError and friends
            problems.append(f"sample {k}: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(out, dict):
            problems.append(f"sample {k}: read a {type(out).__name__}, not a record")
            continue
        changed = sorted(n for n in same_type if out.get(n) != datum.get(n))
        if changed:
            problems.append(f"sample {k}: values changed in fields {changed}")
    distinct: dict[str, str] = {}
    for p in problems:
        distinct.setdefault(p.split(": ", 1)[1], p)
    return list(distinct.values())


def check_pair(old: SchemaVersion, new: SchemaVersion) -> list[Problem]:
    """Backward and forward resolution problems between two versions of one record."""
    problems = [Problem(new.fullname, old.version, new.version, "backward", d) for d in _resolve(old.raw, new.raw)]
    problems += [Problem(new.fullname, old.version, new.version, "forward", d) for d in _resolve(new.raw, old.raw)]
    return problems


def check_store(store: SchemaStore) -> list[Problem]:
    """Every consecutive pair of versions of every record in ``store``."""
    problems: list[Problem] = []
    for versions in store.versions.values():
        for old, new in zip(versions, versions[1:], strict=False):
            problems += check_pair(old, new)
    return problems


def check_dir(schema_dir: Path | str | None = None) -> list[Problem]:
    """:func:`check_store` over a schema directory (default: the project's ``schemas/``)."""
    return check_store(SchemaStore(schema_dir))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    problems = check_dir(args[0] if args else None)
    for p in problems:
        sys.stderr.write(f"{p}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
