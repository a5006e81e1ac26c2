"""Lake file naming, replay overwrite, dedupe of overlapping files and corrupt-file skipping."""

from __future__ import annotations

import uuid

import pytest

from recmesh.core.bus import Record
from recmesh.core.events import Interaction, ItemUpdate
from recmesh.training import lake

DAY = 86_400_000
T0 = 1_700_006_400_000  # 2023-11-15 00:00 UTC


def _recs(partition: int, offsets: range, t0: int = T0, step: int = 1000) -> list[Record]:
    return [
        Record("x.interactions.v1", partition, o, f"u{o % 5}",
               Interaction(f"e{partition}-{o}", f"u{o % 5}", f"i{o % 7}", "click", None, t0 + o * step),
               t0 + o * step)
        for o in offsets
    ]  # fmt: skip


@pytest.fixture
def uri() -> str:
    return f"memory://lake-{uuid.uuid4().hex[:8]}"


def test_file_name_round_trip_and_temp_files_ignored():
    assert lake.file_name(3, 10, 99) == "p3-10-99.parquet"
    assert lake.parse_file_name("a/b/date=2024-01-01/p3-10-99.parquet") == (3, 10, 99)
    assert lake.parse_file_name(".tmp-abc-p3-10-99.parquet") is None
    assert lake.parse_file_name("p3-10-99.parquet.crc") is None


def test_batch_splits_by_partition_and_event_date(uri):
    recs = _recs(0, range(0, 4), step=DAY // 2) + _recs(1, range(10, 12))
    written = lake.LakeWriter(uri).write_batch("interactions.v1", recs)
    names = sorted(w.path.split("lake-")[1].split("/", 1)[1] for w in written)
    assert names == [
        "interactions.v1/date=2023-11-15/p0-0-3.parquet",
        "interactions.v1/date=2023-11-15/p1-10-11.parquet",
        "interactions.v1/date=2023-11-16/p0-0-3.parquet",
    ]
    assert sum(w.rows for w in written) == 6
    df = lake.read_lake(uri)
    assert sorted(df["event_id"]) == sorted(r.value.event_id for r in recs)


def test_replay_overwrites_same_name_and_overlap_is_deduped(uri):
    w = lake.LakeWriter(uri)
    w.write_batch("interactions.v1", _recs(0, range(0, 50)))
    w.write_batch("interactions.v1", _recs(0, range(0, 50)))  # same batch replayed: same file
    w.write_batch("interactions.v1", _recs(0, range(20, 80)))  # different boundaries after a crash
    assert len(lake.lake_files(uri)) == 2
    res = lake.read_lake_detailed(uri)
    assert res.duplicates == 30
    assert list(res.frame["event_id"]) == [f"e0-{o}" for o in range(80)]


def test_time_range_prunes_dates_and_filters_rows(uri):
    lake.LakeWriter(uri).write_batch("interactions.v1", _recs(0, range(0, 6), step=DAY // 2))
    df = lake.read_lake(uri, T0 + DAY // 2, T0 + 2 * DAY)
    assert list(df["event_id"]) == ["e0-1", "e0-2", "e0-3"]
    assert len(lake.lake_files(uri, start_ms=T0 + 2 * DAY)) == 1


def test_corrupt_file_is_reported_and_skipped(uri):
    w = lake.LakeWriter(uri)
    w.write_batch("interactions.v1", _recs(0, range(0, 10)))
    bad = lake.file_path(w.root, "interactions.v1", "2023-11-15", 0, 100, 120)
    w.fs.pipe_file(bad, b"PAR1 this is not parquet")
    df = lake.read_lake(uri)
    assert len(df) == 10
    assert [p.rsplit("/", 1)[1] for p in df.attrs["corrupt_files"]] == ["p0-100-120.parquet"]


def test_local_write_is_atomic_rename(tmp_path):
    w = lake.LakeWriter(str(tmp_path / "lake"))
    w.write_batch("interactions.v1", _recs(2, range(5, 9)))
    files = [p.name for p in (tmp_path / "lake" / "interactions.v1").rglob("*")]
    assert "p2-5-8.parquet" in files and not any(n.startswith(".tmp") for n in files)


def test_catalog_tombstone_and_latest_record(uri):
    topic = "catalog.items.v1"
    recs = [
        Record(topic, 0, 0, "a", ItemUpdate("a", title="A1", categories=["x"], updated_at=T0), T0),
        Record(topic, 0, 1, "b", ItemUpdate("b", title="B", updated_at=T0), T0),
        Record(topic, 0, 2, "a", ItemUpdate("a", title="A2", updated_at=T0 + 5), T0 + 5),
        Record(topic, 0, 3, "b", None, T0 + 6),
    ]
    lake.LakeWriter(uri).write_batch(topic, recs)
    cat = lake.latest_catalog(uri, topic)
    assert list(cat["item_id"]) == ["a"] and list(cat["title"]) == ["A2"]
    assert cat["categories"].iloc[0] == "[]"


def test_catalog_tombstone_deletes_only_in_its_tenant(uri):
    """Two tenants share an item id: a tombstone keyed for one (core.topics.catalog_key) leaves the other."""
    from recmesh.core.topics import catalog_key

    topic = "catalog.items.v1"
    k_t1 = catalog_key("t1", "a", "default")
    recs = [
        Record(topic, 0, 0, "a", ItemUpdate("a", title="default A", updated_at=T0), T0),
        Record(topic, 0, 1, k_t1, ItemUpdate("a", tenant="t1", title="t1 A", updated_at=T0), T0),
        Record(topic, 0, 2, k_t1, None, T0 + 6),
    ]
    lake.LakeWriter(uri).write_batch(topic, recs)
    cat = lake.latest_catalog(uri, topic)
    assert list(zip(cat["tenant"], cat["item_id"], cat["title"], strict=True)) == [("default", "a", "default A")]
    lake.LakeWriter(uri).write_batch(topic, [Record(topic, 0, 3, "a", None, T0 + 7)])
    assert lake.latest_catalog(uri, topic).empty


def test_sweep_removes_only_old_temp_files(tmp_path):
    w = lake.LakeWriter(str(tmp_path / "lake"))
    w.write_batch("interactions.v1", _recs(0, range(0, 3)))
    day = tmp_path / "lake" / "interactions.v1" / "date=2023-11-15"
    (day / ".tmp-dead-p0-9-12.parquet").write_bytes(b"half a file")
    assert lake.sweep_temp_files(str(tmp_path / "lake"), older_than_s=3600) == []
    removed = lake.sweep_temp_files(str(tmp_path / "lake"), older_than_s=0)
    assert [p.rsplit("/", 1)[1] for p in removed] == [".tmp-dead-p0-9-12.parquet"]
    assert [p.name for p in day.iterdir()] == ["p0-0-2.parquet"]


def test_dedupe_keeps_the_first_copy_in_read_order():
    import numpy as np

    codes = np.array([5, 3, 5, 7, 3])  # rows 0..4; keys 5 and 3 appear twice
    order = np.array([4, 3, 2, 1, 0])  # read order (time, partition, offset)
    assert lake._first_of_each(codes, order).tolist() == [4, 3, 2]  # row 4 (3), 3 (7), 2 (5)
    assert lake._first_of_each(codes, np.array([0, 3])).tolist() == [0, 3]  # no key twice: untouched
    import pyarrow as pa

    ids = pa.chunked_array([["a", "b"], ["a", None]])
    c = lake._key_codes(ids)
    assert c[0] == c[2] and len(set(c.tolist())) == 3
