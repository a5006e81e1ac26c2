"""The import pipeline shared by every source: column mapping → cleaning → sink, with counts.

A :class:`Source` yields chunks of row dicts (raw column names) for one kind of entity
(``interactions``, ``items`` or ``users``). :func:`run_import` maps the columns to canonical
field names, cleans each chunk (:mod:`recmesh.ingestion.cleaning`) and hands the events to
a sink: :class:`ProducerSink` (Avro through the idempotent :class:`EventProducer`),
:class:`DryRunSink` (validate only) or an HTTP sink (``client.HttpSink``). The result is an
:class:`ImportSummary` per source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from recmesh.core.bus import EventProducer
from recmesh.core.errors import Backpressure
from recmesh.core.topics import CATALOG_ITEMS, CATALOG_USERS, INTERACTIONS, TopicSpec, catalog_key
from recmesh.ingestion.cleaning import Cleaner, CleaningOptions, CleaningReport

log = logging.getLogger(__name__)

Kind = Literal["interactions", "items", "users"]
Row = dict[str, Any]

SPECS: dict[str, TopicSpec] = {"interactions": INTERACTIONS, "items": CATALOG_ITEMS, "users": CATALOG_USERS}

# Column names recognised without a mapping (compared lower-cased, RecBole ``:type`` suffix removed).
INTERACTION_ALIASES: dict[str, str] = {
    "user_id": "user_id", "userid": "user_id", "user": "user_id", "uid": "user_id", "customer_id": "user_id",
    "item_id": "item_id", "itemid": "item_id", "item": "item_id", "movieid": "item_id", "movie_id": "item_id",
    "product_id": "item_id", "productid": "item_id", "sku": "item_id",
    "event_type": "event_type", "type": "event_type", "event": "event_type", "action": "event_type",
    "value": "value", "rating": "value", "score": "value", "price": "value",
    "timestamp": "timestamp", "ts": "timestamp", "time": "timestamp", "event_time": "timestamp",
    "datetime": "timestamp", "date": "timestamp",
    "event_id": "event_id", "session_id": "session_id", "request_id": "request_id", "tenant": "tenant",
}  # fmt: skip
ITEM_ALIASES: dict[str, str] = {
    "item_id": "item_id", "itemid": "item_id", "item": "item_id", "movieid": "item_id", "movie_id": "item_id",
    "product_id": "item_id", "sku": "item_id", "id": "item_id",
    "title": "title", "movie_title": "title", "name": "title",
    "categories": "categories", "category": "categories", "genres": "categories", "genre": "categories",
    "class": "categories", "available": "available", "created_at": "created_at", "tenant": "tenant",
}  # fmt: skip
USER_ALIASES: dict[str, str] = {
    "user_id": "user_id", "userid": "user_id", "user": "user_id", "uid": "user_id", "id": "user_id",
    "segments": "segments", "segment": "segments", "created_at": "created_at", "tenant": "tenant",
}  # fmt: skip
ALIASES: dict[str, dict[str, str]] = {"interactions": INTERACTION_ALIASES, "items": ITEM_ALIASES,
                                      "users": USER_ALIASES}  # fmt: skip


def _norm_col(c: str) -> str:
    return str(c).split(":", 1)[0].strip().lower()


def column_plan(columns: Iterable[str], kind: str, mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """Source column → canonical field. Explicit ``mapping`` (``{column: field}``) wins over aliases.

    Catalog columns that map to nothing become ``attributes``; interaction columns that map
    to nothing are ignored. A field is taken from the first column that maps to it.
    """
    mapping = dict(mapping or {})
    aliases = ALIASES[kind]
    plan: dict[str, str] = {}
    taken: set[str] = set(mapping.values())
    for c in columns:
        if c in mapping:
            plan[c] = mapping[c]
            continue
        f = aliases.get(_norm_col(c))
        if f is not None and f not in taken:
            plan[c] = f
            taken.add(f)
        elif kind != "interactions":
            plan[c] = "attributes." + _norm_col(c)
    return plan


def apply_plan(rows: Iterable[Row], plan: Mapping[str, str]) -> list[Row]:
    """Rename the columns of each row by ``plan`` (``attributes.x`` and ``context.x`` nest)."""
    flat = [(c, f) for c, f in plan.items() if "." not in f]
    nested = [(c, *f.split(".", 1)) for c, f in plan.items() if "." in f]
    out = []
    for r in rows:
        o: dict[str, Any] = {f: r.get(c) for c, f in flat}
        for c, group, key in nested:
            o.setdefault(group, {})[key] = r.get(c)
        out.append(o)
    return out


def _rating_column(plan: Mapping[str, str]) -> bool:
    return "event_type" not in plan.values() and any(f == "value" and _norm_col(c) == "rating" for c, f in plan.items())


class Source(Protocol):
    """Where rows come from. ``kind`` says what they are; ``name`` labels the summary."""

    name: str
    kind: Kind
    defaults: dict[str, Any]

    def chunks(self) -> Iterator[list[Row]]: ...


@dataclass
class RowsSource:
    """Rows already in memory (tests, generated data)."""

    name: str
    kind: Kind
    rows: list[Row]
    chunk_rows: int = 50_000
    defaults: dict[str, Any] = field(default_factory=dict)

    def chunks(self) -> Iterator[list[Row]]:
        for i in range(0, len(self.rows), self.chunk_rows):
            yield self.rows[i : i + self.chunk_rows]


class Sink(Protocol):
    def write(self, kind: str, events: list[Any]) -> None: ...
    def close(self) -> dict[str, int]: ...


class DryRunSink:
    """Validates only: counts what would have been produced."""

    def __init__(self) -> None:
        self.would_produce = 0

    def write(self, kind: str, events: list[Any]) -> None:
        self.would_produce += len(events)

    def close(self) -> dict[str, int]:
        return {"would_produce": self.would_produce, "produced": 0, "failed": 0}


class ProducerSink:
    """Produces through the idempotent Avro producer; waits (never drops) when the queue is full.

    Catalog records are keyed by :func:`~recmesh.core.topics.catalog_key` (tenant-qualified
    outside ``default_tenant``, the deployment's ``RECMESH_TENANT``), like the HTTP API's.
    """

    def __init__(self, producer: EventProducer, default_tenant: str = "default") -> None:
        self.producer = producer
        self.default_tenant = default_tenant
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self.errors: list[str] = []
        self.enqueued = 0

    def _cb(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
            else:
                self.failed += 1
                if len(self.errors) < 5:
                    self.errors.append(str(err))

    def write(self, kind: str, events: list[Any]) -> None:
        spec = SPECS[kind]
        send = self.producer.send
        cb = self._cb
        catalog = spec is not INTERACTIONS
        for ev in events:
            key = None
            if catalog:
                try:
                    key = catalog_key(ev.tenant, getattr(ev, spec.key), self.default_tenant)
                except ValueError as exc:  # a tenant no key can name: count it as failed, go on
                    self._cb(exc, None)
                    continue
            while True:
                try:
                    send(spec, ev, key=key, on_delivery=cb)
                    break
                except Backpressure:
                    self.producer.poll(0.05)
            self.enqueued += 1

    def close(self, timeout: float = 120.0) -> dict[str, int]:
        left = self.producer.flush(timeout)
        if self.errors:
            log.error("import deliveries failed", extra={"failed": self.failed, "errors": self.errors})
        return {"produced": self.delivered, "failed": self.failed + left}


@dataclass
class ImportSummary:
    """One source's outcome: what was read, kept and dropped (by reason), and how fast."""

    name: str
    kind: str
    report: CleaningReport
    seconds: float = 0.0

    @property
    def rows_per_s(self) -> float:
        return self.report.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, **self.report.as_dict(), "seconds": round(self.seconds, 3),
                "rows_per_s": round(self.rows_per_s, 1)}  # fmt: skip


@dataclass
class ImportResult:
    """Every source's summary plus the sink's delivery counts (``produced``, ``failed``)."""

    summaries: list[ImportSummary]
    delivery: dict[str, int]

    def total(self, kind: str) -> int:
        return sum(s.report.kept for s in self.summaries if s.kind == kind)

    @property
    def ok(self) -> bool:
        return self.delivery.get("failed", 0) == 0


Progress = Callable[[str, int], None]  # (source name, rows just processed)


def run_import(
    sources: Iterable[Source],
    sink: Sink,
    options: CleaningOptions,
    mapping: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Map → clean → sink every source in order; the sink is closed (flushed) at the end."""
    summaries: list[ImportSummary] = []
    try:
        for src in sources:
            opts = CleaningOptions(**{**options.__dict__, **src.defaults})
            cleaner = Cleaner(opts)
            t0 = time.perf_counter()
            plan: dict[str, str] = {}
            cols: tuple[str, ...] | None = None
            for chunk in src.chunks():
                if not chunk:
                    continue
                keys = tuple(chunk[0].keys())
                if keys != cols:
                    cols = keys
                    plan = column_plan(keys, src.kind, mapping)
                    if (
                        src.kind == "interactions"
                        and _rating_column(plan)
                        and "default_event_type" not in src.defaults
                        and options.default_event_type == "view"
                    ):
                        cleaner.o.default_event_type = "rating"  # a ratings table: its rows are ratings
                rows = apply_plan(chunk, plan)
                if src.kind == "interactions":
                    events: list[Any] = cleaner.interactions(rows)
                elif src.kind == "items":
                    events = cleaner.items(rows)
                else:
                    events = cleaner.users(rows)
                sink.write(src.kind, events)
                if progress is not None:
                    progress(src.name, len(chunk))
            summaries.append(ImportSummary(src.name, src.kind, cleaner.report, time.perf_counter() - t0))
    finally:
        delivery = sink.close()
    return ImportResult(summaries, delivery)
