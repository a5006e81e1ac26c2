"""The Parquet lake: a sink from the event topics and the reader that builds datasets from it.

Layout on any fsspec URI (local directory by default, ``s3://`` through fsspec)::

    <lake>/<topic>/date=YYYY-MM-DD/p<partition>-<first offset>-<last offset>.parquet

``<topic>`` is the spec's base name (``interactions.v1``), without the cluster's test/tenant
prefix. The date is the event's own time (UTC): ``timestamp`` for interactions, ``updated_at``
for catalog records, the broker timestamp when those are missing.

Exactly-once rows: the sink writes **one file per handled batch and partition (and date)**
before the handler returns, and the consumer runner commits the batch's offsets only after the
handler returned, so nothing is committed that is not durable. It never buffers records across
handler calls (that would let the runner commit offsets whose rows are still in memory);
batching comes from the runner itself (``consumer_batch_size`` rows or ``consumer_poll_timeout_s``
seconds, raised for the sink). A file is written to a dot-prefixed temporary name, fsynced and
renamed, so readers never see half a file, and a replay of the same offsets overwrites the same
name. After a crash the replayed batch can have different boundaries (overlapping offset
ranges under different names): :func:`read_lake` drops those duplicates by ``event_id``
(interactions) or by (partition, offset) (catalog topics). A file that cannot be read is
reported and skipped.

Maps and lists (``context``, ``attributes``, ``categories``, ``segments``) are stored as JSON
strings: one flat, stable schema per topic whatever the payload.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import fsspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from numpy.typing import NDArray

from recmesh.core.bus import ConsumerRunner, EventProducer, Record, Subscription
from recmesh.core.errors import TransientError
from recmesh.core.metrics import Counter, Gauge, Histogram
from recmesh.core.settings import KafkaSettings
from recmesh.core.topics import CATALOG_ITEMS, CATALOG_USERS, INTERACTIONS, TopicRegistry, TopicSpec, parse_catalog_key

log = logging.getLogger(__name__)

LAKE_ROWS = Counter("recmesh_training_lake_rows_total", "Rows written to the lake.", ["topic"])
LAKE_FILES = Counter("recmesh_training_lake_files_total", "Parquet files written to the lake.", ["topic"])
LAKE_WRITE_SECONDS = Histogram("recmesh_training_lake_write_seconds", "Seconds to write one lake file.", ["topic"])
LAKE_CORRUPT = Counter("recmesh_training_lake_corrupt_files_total", "Lake files skipped as unreadable.")
LAKE_LAG = Gauge("recmesh_training_lake_lag", "Messages the lake sink is behind the log end.")

SINK_TOPICS: tuple[TopicSpec, ...] = (INTERACTIONS, CATALOG_ITEMS, CATALOG_USERS)
_FILE_RE = re.compile(r"^p(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")
_DAY_MS = 86_400_000

_META = [
    pa.field("_partition", pa.int32()),
    pa.field("_offset", pa.int64()),
    pa.field("_kafka_ts", pa.int64()),
]
SCHEMAS: dict[str, pa.Schema] = {
    INTERACTIONS.name: pa.schema(
        [
            pa.field("event_id", pa.string()),
            pa.field("user_id", pa.string()),
            pa.field("item_id", pa.string()),
            pa.field("event_type", pa.string()),
            pa.field("value", pa.float64()),
            pa.field("timestamp", pa.int64()),
            pa.field("session_id", pa.string()),
            pa.field("request_id", pa.string()),
            pa.field("context", pa.string()),
            pa.field("tenant", pa.string()),
            pa.field("source", pa.string()),
            *_META,
        ]
    ),
    CATALOG_ITEMS.name: pa.schema(
        [
            pa.field("item_id", pa.string()),
            pa.field("tenant", pa.string()),
            pa.field("title", pa.string()),
            pa.field("categories", pa.string()),
            pa.field("attributes", pa.string()),
            pa.field("available", pa.bool_()),
            pa.field("created_at", pa.int64()),
            pa.field("updated_at", pa.int64()),
            pa.field("deleted", pa.bool_()),
            *_META,
        ]
    ),
    CATALOG_USERS.name: pa.schema(
        [
            pa.field("user_id", pa.string()),
            pa.field("tenant", pa.string()),
            pa.field("attributes", pa.string()),
            pa.field("segments", pa.string()),
            pa.field("created_at", pa.int64()),
            pa.field("updated_at", pa.int64()),
            pa.field("deleted", pa.bool_()),
            *_META,
        ]
    ),
}
_JSON_COLS = {"context", "attributes", "categories", "segments"}
_EVENT_TIME = {INTERACTIONS.name: "timestamp", CATALOG_ITEMS.name: "updated_at", CATALOG_USERS.name: "updated_at"}
_KEY_COL = {CATALOG_ITEMS.name: "item_id", CATALOG_USERS.name: "user_id"}


# --------------------------------------------------------------------------- naming
def file_name(partition: int, first_offset: int, last_offset: int) -> str:
    """``p<partition>-<first>-<last>.parquet``: the same offsets always give the same name."""
    return f"p{partition}-{first_offset}-{last_offset}.parquet"


def parse_file_name(name: str) -> tuple[int, int, int] | None:
    """(partition, first, last) of a lake file name, None for anything else (temp files too)."""
    mt = _FILE_RE.match(posixpath.basename(name))
    if mt is None:
        return None
    return int(mt["partition"]), int(mt["first"]), int(mt["last"])


def day_of(ts_ms: int) -> str:
    """UTC date (``YYYY-MM-DD``) of an epoch-ms timestamp."""
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def file_path(lake: str, topic: str, day: str, partition: int, first: int, last: int) -> str:
    """Path (within the lake's filesystem root) of one lake file."""
    return posixpath.join(lake.rstrip("/"), topic, f"date={day}", file_name(partition, first, last))


# --------------------------------------------------------------------------- rows
def _row(topic: str, rec: Record[Any]) -> dict[str, Any]:
    ev = rec.value
    meta = {"_partition": rec.partition, "_offset": rec.offset, "_kafka_ts": rec.timestamp_ms}
    if ev is None:  # tombstone on a compacted catalog topic: the entity was deleted (in the key's tenant)
        tenant, entity = parse_catalog_key(rec.key or "", "")
        return {_KEY_COL.get(topic, "key"): entity, "tenant": tenant or None, "deleted": True,
                "updated_at": rec.timestamp_ms, **meta}  # fmt: skip
    row: dict[str, Any] = {}
    for f in SCHEMAS[topic].names:
        if f.startswith("_") or f == "deleted":
            continue
        v = getattr(ev, f, None)
        row[f] = orjson.dumps(v).decode() if f in _JSON_COLS else v
    if "deleted" in SCHEMAS[topic].names:
        row["deleted"] = False
    return {**row, **meta}


def _event_time(topic: str, row: dict[str, Any]) -> int:
    t = row.get(_EVENT_TIME.get(topic, ""))
    return int(t) if t else int(row["_kafka_ts"])


def rows_to_table(topic: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    """A table with the topic's fixed schema (missing fields become nulls)."""
    schema = SCHEMAS[topic]
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)


# --------------------------------------------------------------------------- writing
def _is_local(fs: Any) -> bool:
    proto = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in proto or "local" in proto


def write_file(fs: Any, path: str, table: pa.Table) -> None:
    """Write ``table`` to ``path`` so that a reader sees the whole file or nothing.

    Local disks: temp name in the same directory, fsync, rename (atomic, replaces a file of the
    same name), fsync of the directory. Object stores: one PUT of the whole object.
    """
    directory = posixpath.dirname(path)
    if _is_local(fs):
        os.makedirs(directory, exist_ok=True)
        tmp = posixpath.join(directory, f".tmp-{uuid.uuid4().hex[:10]}-{posixpath.basename(path)}")
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    else:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        fs.pipe_file(path, sink.getvalue().to_pybytes())


@dataclass
class WrittenFile:
    """What one call of the sink wrote."""

    path: str
    rows: int


class LakeWriter:
    """Turns handled batches into lake files (pure of Kafka: tests feed it records directly)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.uri)
        self.root = str(self.root).rstrip("/")

    def write_batch(self, topic: str, records: Sequence[Record[Any]]) -> list[WrittenFile]:
        """One file per (partition, date) of the batch, named by the batch's offset range."""
        groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
        ranges: dict[int, tuple[int, int]] = {}
        for rec in records:
            row = _row(topic, rec)
            groups.setdefault((rec.partition, day_of(_event_time(topic, row))), []).append(row)
            lo, hi = ranges.get(rec.partition, (rec.offset, rec.offset))
            ranges[rec.partition] = (min(lo, rec.offset), max(hi, rec.offset))
        out = []
        for (partition, day), rows in sorted(groups.items()):
            first, last = ranges[partition]
            path = file_path(self.root, topic, day, partition, first, last)
            t0 = time.perf_counter()
            write_file(self.fs, path, rows_to_table(topic, rows))
            LAKE_WRITE_SECONDS.labels(topic).observe(time.perf_counter() - t0)
            LAKE_FILES.labels(topic).inc()
            LAKE_ROWS.labels(topic).inc(len(rows))
            out.append(WrittenFile(path, len(rows)))
        return out


def sweep_temp_files(uri: str, older_than_s: float = 3600.0) -> list[str]:
    """Remove temp files a killed writer left behind (readers already ignore them).

    Only files older than ``older_than_s`` go: another sink instance may be writing right now.
    """
    fs, root = fsspec.core.url_to_fs(uri.rstrip("/"))
    root = str(root).rstrip("/")
    if not fs.exists(root):
        return []
    removed = []
    now = time.time()
    for path, info in fs.find(root, detail=True).items():
        if not posixpath.basename(path).startswith(".tmp-"):
            continue
        mtime = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
        ts = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
        if now - ts >= older_than_s:
            try:
                fs.rm(path)
                removed.append(path)
            except FileNotFoundError:  # its writer renamed it meanwhile
                continue
    if removed:
        log.info("removed stale lake temp files", extra={"count": len(removed)})
    return removed


# --------------------------------------------------------------------------- the sink
class LakeSink:
    """A consumer-runner subscription on interactions and the catalog topics writing the lake.

    ``batch_rows`` and ``batch_seconds`` set the runner's batch size and poll timeout: a file
    holds up to ``batch_rows`` records per partition, or what arrived within ``batch_seconds``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicRegistry,
        lake_uri: str,
        group_id: str = "recmesh-training-lake",
        batch_rows: int = 5000,
        batch_seconds: float = 2.0,
        schema_registry_url: str | None = None,
        producer: EventProducer | None = None,
        specs: Iterable[TopicSpec] = SINK_TOPICS,
    ) -> None:
        self.writer = LakeWriter(lake_uri)
        self.rows_written = 0
        self.files_written = 0
        self.rows_by_topic: dict[str, int] = {}
        self._lock = threading.Lock()
        sink_kafka = kafka.model_copy(
            update={"consumer_batch_size": batch_rows, "consumer_poll_timeout_s": batch_seconds}
        )
        self.runner = ConsumerRunner(
            sink_kafka,
            topics,
            group_id,
            [Subscription(spec, self._handler(spec)) for spec in specs],
            producer=producer,
            schema_registry_url=schema_registry_url,
            client_id="training-lake",
        )

    def _handler(self, spec: TopicSpec) -> Any:
        def handle(records: list[Record[Any]]) -> None:
            try:
                written = self.writer.write_batch(spec.name, records)
            except OSError as exc:
                # storage down or full: retry forever without committing, never dead-letter good events
                raise TransientError(f"lake write failed: {exc}") from exc
            rows = sum(w.rows for w in written)
            with self._lock:
                self.rows_written += rows
                self.rows_by_topic[spec.name] = self.rows_by_topic.get(spec.name, 0) + rows
                self.files_written += len(written)
            LAKE_LAG.set(self.runner.total_lag())

        return handle

    def start_thread(self) -> threading.Thread:
        sweep_temp_files(self.writer.uri)
        return self.runner.start_thread()

    def run(self) -> None:
        sweep_temp_files(self.writer.uri)
        self.runner.run()

    def stop(self) -> None:
        self.runner.stop()

    def lag(self) -> int:
        return self.runner.total_lag()


# --------------------------------------------------------------------------- reading
@dataclass
class LakeRead:
    """Rows read from the lake plus what had to be skipped."""

    frame: pd.DataFrame
    files: int = 0
    corrupt: list[str] = field(default_factory=list)
    duplicates: int = 0


def _days(start_ms: int | None, end_ms: int | None) -> tuple[date | None, date | None]:
    to_day = lambda ms: datetime.fromtimestamp(ms / 1000, tz=UTC).date()  # noqa: E731
    return (to_day(start_ms) if start_ms is not None else None, to_day(end_ms) if end_ms is not None else None)


def lake_files(uri: str, topic: str = INTERACTIONS.name, start_ms: int | None = None,
               end_ms: int | None = None) -> list[str]:  # fmt: skip
    """Lake files of ``topic`` whose date partition can hold events in [start_ms, end_ms)."""
    fs, root = fsspec.core.url_to_fs(uri.rstrip("/"))
    base = posixpath.join(str(root).rstrip("/"), topic)
    if not fs.exists(base):
        return []
    lo, hi = _days(start_ms, None if end_ms is None else end_ms - 1)
    out = []
    for d in sorted(fs.ls(base, detail=False)):
        name = posixpath.basename(d.rstrip("/"))
        if not name.startswith("date="):
            continue
        try:
            day = date.fromisoformat(name[5:])
        except ValueError:
            continue
        if (lo is not None and day < lo) or (hi is not None and day > hi):
            continue
        out.extend(sorted(p for p in fs.ls(d, detail=False) if parse_file_name(p) is not None))
    return out


def _key_codes(ids: pa.ChunkedArray) -> NDArray[np.int64]:
    """Integer codes of a string key column (equal strings, equal codes), hashed once in Arrow."""
    enc = pc.dictionary_encode(pc.fill_null(ids, "")).combine_chunks()
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _first_of_each(codes: NDArray[np.int64], order: NDArray[np.int64]) -> NDArray[np.int64]:
    """``order`` without the rows whose key already appeared earlier in it (the first copy wins).

    Overlapping files only exist after a crash or replay, so the common case is a bincount that
    finds no key twice; otherwise one stable sort of the codes finds each key's first row.
    """
    c = codes[order]
    if c.size == 0 or np.bincount(c).max() <= 1:
        return order
    by_key = np.argsort(c, kind="stable")
    s = c[by_key]
    first = np.ones(s.size, dtype=bool)
    first[1:] = s[1:] != s[:-1]
    keep = np.zeros(c.size, dtype=bool)
    keep[by_key[first]] = True
    return order[keep]


def read_lake_detailed(
    uri: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    topic: str = INTERACTIONS.name,
    columns: Sequence[str] | None = None,
) -> LakeRead:
    """Rows of ``topic`` with event time in [start_ms, end_ms), deduplicated, corrupt files skipped."""
    fs, _ = fsspec.core.url_to_fs(uri.rstrip("/"))
    files = lake_files(uri, topic, start_ms, end_ms)
    schema = SCHEMAS[topic]
    cols = list(schema.names) if columns is None else list(dict.fromkeys([*columns, "_partition", "_offset"]))
    time_col = _EVENT_TIME[topic]
    for c in (time_col, "_kafka_ts"):
        if c not in cols:
            cols.append(c)
    if topic == INTERACTIONS.name and "event_id" not in cols:
        cols.append("event_id")
    tables: list[pa.Table] = []
    corrupt: list[str] = []
    try:  # fast path: one multi-threaded scan over every file
        tables.append(pads.dataset(files, filesystem=fs, format="parquet", schema=schema).to_table(columns=cols))
    except Exception:  # some file is unreadable: read one by one to find and skip it
        for path in files:
            try:
                with fs.open(path, "rb") as fh:
                    tables.append(pq.read_table(fh, columns=cols))
            except Exception as exc:  # a torn or foreign file must not stop training
                corrupt.append(path)
                LAKE_CORRUPT.inc()
                log.warning("skipping unreadable lake file", extra={"path": path, "error": str(exc)[:200]})
    if tables and files:
        table = pa.concat_tables(tables, promote_options="default")
    else:
        table = pa.Table.from_pylist([], schema=pa.schema([schema.field(c) for c in cols]))
    # filter and order with numpy on the integer columns (cheap), then convert once
    t = pc.fill_null(table[time_col], 0).to_numpy().astype(np.int64)
    kts = pc.fill_null(table["_kafka_ts"], 0).to_numpy().astype(np.int64)
    t = np.where(t > 0, t, kts)  # records without an event time fall back to the broker's time
    keep = np.ones(len(t), dtype=bool)
    if start_ms is not None:
        keep &= t >= start_ms
    if end_ms is not None:
        keep &= t < end_ms
    part = pc.fill_null(table["_partition"], 0).to_numpy()
    off = pc.fill_null(table["_offset"], 0).to_numpy()
    order = np.lexsort((off, part, t))
    order = order[keep[order]]
    before = order.size
    # dedupe on the key columns alone (in time order, the first copy wins), then gather only the
    # columns the caller asked for, once: string columns are the expensive part of take/convert
    if topic == INTERACTIONS.name:
        order = _first_of_each(_key_codes(table["event_id"]), order)
    else:
        keys = table.select(["_partition", "_offset"]).take(pa.array(order)).to_pandas()
        order = order[~keys.duplicated(keep="first").to_numpy()]
    if columns is not None:
        table = table.select(list(dict.fromkeys(columns)))
    df = table.take(pa.array(order)).to_pandas()
    return LakeRead(frame=df, files=len(files), corrupt=corrupt, duplicates=before - len(df))


def read_lake(
    uri: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    topic: str = INTERACTIONS.name,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Rows of ``topic`` for a time range as a DataFrame (``attrs['corrupt_files']`` lists skips)."""
    res = read_lake_detailed(uri, start_ms, end_ms, topic, columns)
    res.frame.attrs["corrupt_files"] = res.corrupt
    res.frame.attrs["duplicates"] = res.duplicates
    return res.frame


TRAINING_COLUMNS = ["user_id", "item_id", "timestamp", "event_type", "value"]


def training_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The canonical interaction frame (see ``dataset.normalize_frame``) from lake rows.

    Lake rows were typed Avro events (non-null string ids, epoch-ms timestamps, lower-case event
    types) and :func:`read_lake` already ordered them by time, so only empty ids are dropped;
    the string cleaning of arbitrary input files is skipped (seconds on millions of rows).
    """
    out = df[TRAINING_COLUMNS]
    ok = (out["user_id"].str.len() > 0) & (out["item_id"].str.len() > 0)
    if not ok.all():
        out = out[ok.to_numpy()]
    out = out.astype({"timestamp": "int64", "value": "float64"})
    out["event_type"] = out["event_type"].fillna("")
    return out.reset_index(drop=True)


def lake_dataset(uri: str, start_ms: int | None = None, end_ms: int | None = None, **dataset_kwargs: Any) -> Any:
    """A training :class:`~recmesh.training.dataset.Dataset` from the lake's interactions."""
    from .dataset import Dataset, DatasetError

    df = read_lake(uri, start_ms, end_ms, columns=TRAINING_COLUMNS)
    if df.empty:
        raise DatasetError(f"{uri}: no interactions in the lake for the requested range")
    return Dataset.from_frame(training_frame(df), **dataset_kwargs)


def latest_catalog(uri: str, topic: str = CATALOG_ITEMS.name, default_tenant: str = "default") -> pd.DataFrame:
    """The newest record per (tenant, id) of a catalog topic (deleted entities dropped).

    A tombstone with a bare key belongs to ``default_tenant`` (see ``core.topics.catalog_key``).
    """
    df = read_lake(uri, topic=topic)
    if df.empty:
        return df
    key = _KEY_COL[topic]
    if "tenant" not in df.columns:
        df["tenant"] = None
    df["tenant"] = df["tenant"].fillna(default_tenant)
    df = df.sort_values(["updated_at", "_offset"], kind="stable").drop_duplicates(["tenant", key], keep="last")
    return df[~df["deleted"].fillna(False).astype(bool)].reset_index(drop=True)


def days_between(start_ms: int, end_ms: int) -> list[str]:
    """Date partitions covering [start_ms, end_ms) (used by retention and tests)."""
    lo, hi = _days(start_ms, end_ms - 1)
    assert lo is not None and hi is not None
    return [(lo + timedelta(days=i)).isoformat() for i in range((hi - lo).days + 1)]
