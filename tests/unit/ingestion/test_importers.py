"""Importer parsing of every supported format, on small files each test writes."""

from __future__ import annotations

import pandas as pd
import pytest

from recmesh.ingestion.cleaning import CleaningOptions
from recmesh.ingestion.importers import (
    DryRunSink,
    ImportFormatError,
    RowsSource,
    apply_plan,
    column_plan,
    file_source,
    movielens_sources,
    run_import,
)


class Collect:
    """A sink that keeps what it is given (unit tests only)."""

    def __init__(self):
        self.got: dict[str, list] = {}

    def write(self, kind, events):
        self.got.setdefault(kind, []).extend(events)

    def close(self):
        return {"produced": sum(len(v) for v in self.got.values()), "failed": 0}


def _import(sources, mapping=None, **opts):
    sink = Collect()
    result = run_import(sources, sink, CleaningOptions(tenant="t", **opts), mapping=mapping)
    return sink.got, result


def test_column_plan_aliases_and_explicit_mapping():
    plan = column_plan(["userId", "movieId", "rating", "timestamp", "extra"], "interactions")
    assert plan == {"userId": "user_id", "movieId": "item_id", "rating": "value", "timestamp": "timestamp"}
    plan = column_plan(["who", "what", "when", "uid"], "interactions", {"who": "user_id", "what": "item_id",
                                                                      "when": "timestamp"})  # fmt: skip
    assert plan == {"who": "user_id", "what": "item_id", "when": "timestamp"}  # uid not taken twice
    plan = column_plan(["item_id:token", "movie_title:token_seq", "release_year:token"], "items")
    assert plan == {"item_id:token": "item_id", "movie_title:token_seq": "title",
                    "release_year:token": "attributes.release_year"}  # fmt: skip
    assert apply_plan([{"a": 1, "b": 2}], {"a": "item_id", "b": "attributes.b"}) == [
        {"item_id": 1, "attributes": {"b": 2}}
    ]


def test_csv_with_column_mapping(tmp_path):
    p = tmp_path / "events.csv"
    p.write_text("customer,product,kind,ts,amount\nc1,p1,purchase,1700000000000,9.5\nc2,,view,1700000000001,\n")
    got, res = _import([file_source(p)], mapping={"customer": "user_id", "product": "item_id", "kind": "event_type",
                                                  "ts": "timestamp", "amount": "value"})  # fmt: skip
    evs = got["interactions"]
    assert [(e.user_id, e.item_id, e.event_type, e.value, e.timestamp) for e in evs] == [
        ("c1", "p1", "purchase", 9.5, 1_700_000_000_000)
    ]
    assert res.summaries[0].report.dropped == {"missing_id": 1}


def test_parquet(tmp_path):
    p = tmp_path / "events.parquet"
    ts = pd.to_datetime(["2023-11-14T22:13:20Z", "2023-11-14T22:13:21Z"], utc=True)
    pd.DataFrame({"user_id": [1, 2], "item_id": ["a", "b"], "event_type": ["click", "like"],
                  "timestamp": ts}).to_parquet(p)  # fmt: skip
    got, _ = _import([file_source(p)])
    assert [(e.user_id, e.item_id, e.event_type, e.timestamp) for e in got["interactions"]] == [
        ("1", "a", "click", 1_700_000_000_000), ("2", "b", "like", 1_700_000_001_000)]  # fmt: skip


def test_ndjson(tmp_path):
    p = tmp_path / "events.ndjson"
    p.write_text('{"user_id": "u", "item_id": "i", "event_type": "share", "event_id": "e1"}\n\n'
                 '{"user_id": "u", "item_id": "i", "event_type": "share", "event_id": "e1"}\n')  # fmt: skip
    got, res = _import([file_source(p)])
    assert [e.event_id for e in got["interactions"]] == ["e1"]
    assert res.summaries[0].report.dropped == {"duplicate": 1}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": 1}\n{oops}\n')
    with pytest.raises(ImportFormatError, match="bad.jsonl:2"):
        _import([file_source(bad)])


def test_grouplens_ml100k_files(tmp_path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t5\t891717742\n")
    (tmp_path / "u.item").write_bytes(
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "2|Café (1995)|01-Jan-1995||http://y|0|1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n".encode("latin-1"))  # fmt: skip
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n")
    sources = movielens_sources(tmp_path)
    assert [s.kind for s in sources] == ["items", "users", "interactions"]
    got, _ = _import(sources)
    r = got["interactions"]
    assert [(e.user_id, e.item_id, e.event_type, e.value, e.timestamp) for e in r] == [
        ("196", "242", "rating", 3.0, 881_250_949_000), ("186", "302", "rating", 5.0, 891_717_742_000)]  # fmt: skip
    items = got["items"]
    assert (items[0].title, items[0].categories) == ("Toy Story (1995)", ["Animation", "Children's", "Comedy"])
    assert items[0].attributes["imdb_url"] == "http://x"
    assert (items[1].title, items[1].categories) == ("Café (1995)", ["Action"])
    assert got["users"][0].attributes == {"age": "24", "gender": "M", "occupation": "technician",
                                          "zip_code": "85711"}  # fmt: skip


def test_ml1m_dat_files(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (tmp_path / "movies.dat").write_bytes("1::Toy Story (1995)::Animation|Children's|Comedy\n".encode("latin-1"))
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n")
    got, _ = _import(movielens_sources(tmp_path))
    assert [(e.item_id, e.value, e.timestamp) for e in got["interactions"]] == [
        ("1193", 5.0, 978_300_760_000), ("661", 3.0, 978_302_109_000)]  # fmt: skip
    assert got["items"][0].categories == ["Animation", "Children's", "Comedy"]
    assert got["users"][0].attributes["zip_code"] == "48067"


def test_ml_latest_csv_files(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,"Toy Story (1995)",Adventure|Animation\n2,"Jumanji, The (1995)",(no genres listed)\n'
    )
    got, _ = _import(movielens_sources(tmp_path))
    assert [(e.user_id, e.item_id, e.event_type, e.value) for e in got["interactions"]] == [
        ("1", "1", "rating", 4.0), ("1", "3", "rating", 4.5)]  # fmt: skip
    assert [(i.title, i.categories) for i in got["items"]] == [
        ("Toy Story (1995)", ["Adventure", "Animation"]), ("Jumanji, The (1995)", [])]  # fmt: skip


def test_recbole_atomic_files(tmp_path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                      "196\t242\t3\t881250949\n")  # fmt: skip
    (tmp_path / "x.item").write_text('item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n'
                                     '1\tToy Story "Special"\t1995\tAnimation Children\'s Comedy\n')  # fmt: skip
    (tmp_path / "x.user").write_text("user_id:token\tage:token\tgender:token\n1\t24\tM\n")
    got, _ = _import(movielens_sources(tmp_path), rules=())
    e = got["interactions"][0]
    assert (e.user_id, e.item_id, e.event_type, e.value, e.timestamp) == ("196", "242", "rating", 3.0,
                                                                          881_250_949_000)  # fmt: skip
    i = got["items"][0]
    assert (i.title, i.categories, i.attributes) == ('Toy Story "Special"', ["Animation", "Children's", "Comedy"],
                                                     {"release_year": "1995"})  # fmt: skip
    assert got["users"][0].attributes == {"age": "24", "gender": "M"}


def test_unknown_formats_are_refused(tmp_path):
    p = tmp_path / "data.xlsx"
    p.write_text("x")
    with pytest.raises(ImportFormatError, match="unknown format"):
        file_source(p)
    with pytest.raises(ImportFormatError, match="no MovieLens ratings"):
        movielens_sources(tmp_path)


def test_dry_run_counts_without_producing():
    rows = [{"user_id": i, "item_id": 1} for i in range(5)] + [{"user_id": None, "item_id": 1}]
    res = run_import([RowsSource("mem", "interactions", rows, chunk_rows=2)], DryRunSink(), CleaningOptions())
    assert res.delivery == {"would_produce": 5, "produced": 0, "failed": 0}
    assert res.summaries[0].report.read == 6 and res.total("interactions") == 5
