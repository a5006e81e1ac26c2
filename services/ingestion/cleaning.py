"""Cleaning and normalisation of imported rows (files, SQL, HTTP APIs) into typed events.

Rows arrive as dicts whose keys are already the canonical field names (the importers map
columns). Each step counts what it dropped and why, so that an import ends with a summary
like ``missing_id 12 · duplicate 40 · bot 3``:

1. ids: missing/empty → ``missing_id``; not text or integral → ``invalid_id`` (ids become strings)
2. event type: alias → canonical; unknown → ``invalid_event_type``
3. value: NaN → null; outside ``[value_min, value_max]`` → clamped (counted) or ``out_of_range``
4. timestamp: seconds / ms / µs / ISO 8601 / datetime → UTC epoch ms; unparsable →
   ``invalid_timestamp``; missing → import time (or dropped, ``missing_timestamp``);
   further than the allowed skew in the future → ``future_timestamp``
5. value-based type rules (e.g. rating ≥ 4 → like), counted per rewrite
6. dedupe: same event id (given, or derived from the row's content) → ``duplicate``
7. optional bot filter: a user's events beyond N in one minute → ``bot``

Rows without an event id get a deterministic one (a hash of tenant, user, item, type,
timestamp and value), so re-importing a file is idempotent for every downstream consumer.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recmesh.core.events import EVENT_TYPES, Interaction, ItemUpdate, UserUpdate, now_ms
from recmesh.ingestion.handlers import (
    Reject,
    map_event_type,
    norm_id,
    norm_str_list,
    norm_str_map,
    parse_timestamp,
)
from recmesh.ingestion.settings import EventTypeRule, IngestionSection

_TYPES = frozenset(EVENT_TYPES)


def _missing(v: Any) -> bool:
    return v is None or (type(v) is float and v != v) or (type(v) is str and not v.strip())


@dataclass
class CleaningReport:
    """What one import read, kept, dropped (by reason) and rewrote."""

    read: int = 0
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    clamped: int = 0
    remapped: Counter[str] = field(default_factory=Counter)
    defaulted_timestamps: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] += 1

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def merge(self, other: CleaningReport) -> None:
        self.read += other.read
        self.kept += other.kept
        self.dropped.update(other.dropped)
        self.clamped += other.clamped
        self.remapped.update(other.remapped)
        self.defaulted_timestamps += other.defaulted_timestamps

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "clamped": self.clamped,
            "remapped": dict(self.remapped),
            "defaulted_timestamps": self.defaulted_timestamps,
        }


@dataclass
class CleaningOptions:
    """Per-import knobs (defaults from the ``ingestion`` settings section)."""

    tenant: str = "default"
    source: str = "import"
    ts_unit: str = "auto"
    default_event_type: str = "view"
    aliases: dict[str, str] = field(default_factory=dict)
    rules: Sequence[EventTypeRule] = ()
    value_min: float | None = None
    value_max: float | None = None
    out_of_range: str = "drop"
    missing_timestamp: str = "now"
    max_future_skew_ms: int = 5 * 60_000
    max_id_length: int = 256
    dedupe: bool = True
    bot_max_events_per_minute: int | None = None

    @classmethod
    def from_section(cls, s: IngestionSection, **overrides: Any) -> CleaningOptions:
        base: dict[str, Any] = {
            "aliases": dict(s.event_type_aliases),
            "rules": tuple(s.event_type_rules),
            "value_min": s.value_min,
            "value_max": s.value_max,
            "out_of_range": s.out_of_range,
            "max_future_skew_ms": s.max_future_skew_ms,
            "max_id_length": s.max_id_length,
            "bot_max_events_per_minute": s.bot_max_events_per_minute,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def _str_list(v: Any, name: str) -> list[str]:
    """A list of strings; a text cell ``"a|b"`` is split on ``|`` (the MovieLens genres convention)."""
    if v is None or (type(v) is float and v != v):
        return []
    if isinstance(v, str):
        return [p.strip() for p in v.split("|") if p.strip()]
    if hasattr(v, "tolist"):  # numpy / arrow arrays from Parquet
        v = v.tolist()
    return norm_str_list(v, name)


def derived_event_id(tenant: str, user: str, item: str, et: str, ts: int, value: float | None) -> str:
    """A stable id for a row without one: the same row always gets the same id."""
    raw = f"{tenant}\x1f{user}\x1f{item}\x1f{et}\x1f{ts}\x1f{value}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _timestamp(v: Any, unit: str) -> int:
    if type(v) is str:
        s = v.strip()
        try:
            return parse_timestamp(float(s) if "." in s or "e" in s.lower() else int(s), unit=unit)
        except ValueError:
            return parse_timestamp(s)
    if hasattr(v, "item") and not hasattr(v, "tzinfo"):  # numpy scalar
        v = v.item()
    return parse_timestamp(v, unit=unit)


def _value(v: Any) -> float | None:
    if _missing(v):
        return None
    if type(v) is bool:
        raise Reject("invalid_value", "'value' must be a number")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise Reject("invalid_value", f"'value' is not a number: {str(v)[:40]!r}") from None
    if x != x:
        return None
    if x in (float("inf"), float("-inf")):
        raise Reject("invalid_value", "'value' must be finite")
    return x


class Cleaner:
    """Streaming cleaner: call :meth:`interactions` per chunk; the report accumulates."""

    def __init__(self, opts: CleaningOptions, now: int | None = None) -> None:
        self.o = opts
        self.now = now_ms() if now is None else now
        self.report = CleaningReport()
        self._seen: set[str] = set()
        self._per_minute: Counter[tuple[str, int]] = Counter()

    def _id(self, v: Any, name: str) -> str:
        if _missing(v):
            raise Reject("missing_id", f"missing {name}")
        if hasattr(v, "item") and not isinstance(v, str):  # numpy scalar
            v = v.item()
        try:
            s = norm_id(v, name, self.o.max_id_length)
        except Reject as exc:
            raise Reject("invalid_id", exc.message) from None
        assert s is not None
        return s

    def _row(self, row: dict[str, Any]) -> Interaction:
        o = self.o
        user = self._id(row.get("user_id"), "user_id")
        item = self._id(row.get("item_id"), "item_id")
        et_raw = row.get("event_type")
        et = o.default_event_type if _missing(et_raw) else str(et_raw).strip().lower()
        if et not in _TYPES:
            et = o.aliases.get(et, et)
            if et not in _TYPES:
                raise Reject("invalid_event_type", f"unknown event_type {et_raw!r}")
        value = _value(row.get("value"))
        if value is not None and (o.value_min is not None or o.value_max is not None):
            lo = o.value_min if o.value_min is not None else value
            hi = o.value_max if o.value_max is not None else value
            if value < lo or value > hi:
                if o.out_of_range == "drop":
                    raise Reject("out_of_range", f"value {value} outside [{o.value_min}, {o.value_max}]")
                value = min(max(value, lo), hi)
                self.report.clamped += 1
        ts_raw = row.get("timestamp")
        if _missing(ts_raw):
            if o.missing_timestamp == "drop":
                raise Reject("missing_timestamp", "missing timestamp")
            ts = self.now
            self.report.defaulted_timestamps += 1
        else:
            try:
                ts = _timestamp(ts_raw, o.ts_unit)
            except Reject as exc:
                raise Reject("invalid_timestamp", exc.message) from None
            if ts > self.now + o.max_future_skew_ms:
                raise Reject("future_timestamp", "timestamp in the future")
        if o.rules:
            new = map_event_type(et, value, o.rules)
            if new != et:
                self.report.remapped[f"{et}→{new}"] += 1
                et = new
        tenant_raw = row.get("tenant")
        tenant = o.tenant if _missing(tenant_raw) else str(tenant_raw)
        eid_raw = row.get("event_id")
        eid = (
            derived_event_id(tenant, user, item, et, ts, value) if _missing(eid_raw) else self._id(eid_raw, "event_id")
        )
        ctx = row.get("context")
        sess = row.get("session_id")
        req = row.get("request_id")
        return Interaction(
            event_id=eid,
            user_id=user,
            item_id=item,
            event_type=et,
            value=value,
            timestamp=ts,
            session_id=None if _missing(sess) else str(sess),
            request_id=None if _missing(req) else str(req),
            context=norm_str_map(ctx, "context") if isinstance(ctx, dict) else {},
            tenant=tenant,
            source=o.source,
        )

    def interactions(self, rows: Iterable[dict[str, Any]]) -> list[Interaction]:
        """Clean one chunk of rows; dropped rows are counted in :attr:`report`."""
        out: list[Interaction] = []
        rep = self.report
        seen = self._seen
        bot = self.o.bot_max_events_per_minute
        for row in rows:
            rep.read += 1
            try:
                ev = self._row(row)
            except Reject as exc:
                rep.drop(exc.reason)
                continue
            if self.o.dedupe:
                k = f"{ev.tenant}\x1f{ev.event_id}"
                if k in seen:
                    rep.drop("duplicate")
                    continue
                seen.add(k)
            if bot is not None:
                bucket = (ev.user_id, ev.timestamp // 60_000)
                self._per_minute[bucket] += 1
                if self._per_minute[bucket] > bot:
                    rep.drop("bot")
                    continue
            rep.kept += 1
            out.append(ev)
        return out

    # -- catalog ---------------------------------------------------------------------------------
    def _catalog(self, rows: Iterable[dict[str, Any]], kind: str) -> list[Any]:
        out: list[Any] = []
        rep = self.report
        id_field = f"{kind}_id"
        for row in rows:
            rep.read += 1
            try:
                eid = self._id(row.get(id_field), id_field)
                tenant_raw = row.get("tenant")
                tenant = self.o.tenant if _missing(tenant_raw) else str(tenant_raw)
                created_raw = row.get("created_at")
                created = None if _missing(created_raw) else _timestamp(created_raw, self.o.ts_unit)
                attrs = {k: str(v) for k, v in (row.get("attributes") or {}).items() if not _missing(v)}
                if kind == "item":
                    cats = row.get("categories")
                    title = row.get("title")
                    avail = row.get("available")
                    ev: Any = ItemUpdate(
                        item_id=eid,
                        tenant=tenant,
                        title=None if _missing(title) else str(title),
                        categories=_str_list(cats, "categories"),
                        attributes=attrs,
                        available=True if _missing(avail) else str(avail).lower() in ("1", "true", "yes"),
                        created_at=created,
                        updated_at=self.now,
                    )
                else:
                    segs = row.get("segments")
                    ev = UserUpdate(
                        user_id=eid,
                        tenant=tenant,
                        attributes=attrs,
                        segments=_str_list(segs, "segments"),
                        created_at=created,
                        updated_at=self.now,
                    )
            except Reject as exc:
                rep.drop(exc.reason)
                continue
            if self.o.dedupe:
                k = f"{tenant}\x1f{eid}"
                if k in self._seen:
                    rep.drop("duplicate")
                    continue
                self._seen.add(k)
            rep.kept += 1
            out.append(ev)
        return out

    def items(self, rows: Iterable[dict[str, Any]]) -> list[ItemUpdate]:
        return self._catalog(rows, "item")

    def users(self, rows: Iterable[dict[str, Any]]) -> list[UserUpdate]:
        return self._catalog(rows, "user")
