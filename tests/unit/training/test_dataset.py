"""Loading, weighting, filtering and splitting interaction data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recmesh.training.dataset import (
    Dataset,
    DatasetError,
    FilterConfig,
    WeightConfig,
    load_interactions,
    normalize_frame,
    parse_split,
    split_dataset,
)

from .conftest import toy_frame


def _write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_with_event_types_and_seconds_timestamps(tmp_path) -> None:
    p = _write(
        tmp_path,
        "events.csv",
        "user_id,item_id,timestamp,event_type,value\nu1,a,1700000000,view,\nu1,b,1700000001,purchase,9.5\n",
    )
    df = load_interactions(p)
    assert df["timestamp"].tolist() == [1_700_000_000_000, 1_700_000_001_000]  # seconds → ms
    assert df["event_type"].tolist() == ["view", "purchase"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("u.data", "1\t10\t4\t881250949\n2\t20\t2\t881250950\n"),
        ("ratings.dat", "1::10::4::978300760\n2::20::2::978300761\n"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,20,2.0,964982704\n"),
        (
            "ml.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t881250949\n2\t20\t2\t881250950\n",
        ),
    ],
)
def test_movielens_formats_are_recognised_by_name(tmp_path, name: str, text: str) -> None:
    df = load_interactions(_write(tmp_path, name, text))
    assert df["user_id"].tolist() == ["1", "2"] and df["item_id"].tolist() == ["10", "20"]
    assert df["value"].tolist() == [4.0, 2.0] and set(df["event_type"]) == {"rating"}
    assert df["timestamp"].min() > 1e11


def test_parquet(tmp_path) -> None:
    p = tmp_path / "x.parquet"
    toy_frame(n_users=3).to_parquet(p)
    assert len(load_interactions(p)) == 3 * 12


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("user_id,item_id,timestamp\n", "empty file"),
        ("user_id,item\nu,a\n", "missing column(s) item_id, timestamp"),
        ("user_id,item_id,timestamp\nu,a,yesterday\n", "non-numeric"),
        ("user_id,item_id,timestamp\n,a,1\n", "user_id has 1 null"),
        ("user_id,item_id,timestamp\nu,,1\n", "item_id has 1 null"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, text: str, message: str) -> None:
    with pytest.raises(DatasetError) as info:
        load_interactions(_write(tmp_path, "bad.csv", text))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        load_interactions(tmp_path / "nope.csv")


def _frame(rows):
    return normalize_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type", "value"]))


def test_event_weights_and_rating_rules() -> None:
    f = _frame(
        [
            ("u", "a", 1, "purchase", None),
            ("u", "b", 2, "view", None),
            ("u", "c", 3, "dislike", None),
            ("u", "d", 4, "rating", 5.0),
            ("u", "e", 5, "rating", 2.0),
        ]
    )
    ds = Dataset.from_frame(f)
    w = dict(zip(ds.frame["item_id"], ds.frame["weight"], strict=True))
    assert w["a"] > w["b"] > 0 > w["c"] and w["d"] == w["e"] == 1.0  # binary ratings
    ds = Dataset.from_frame(f, WeightConfig(rating_rule="threshold", rating_threshold=3.5))
    w = dict(zip(ds.frame["item_id"], ds.frame["weight"], strict=True))
    assert w["d"] == 1.0 and w["e"] < 0
    ds = Dataset.from_frame(f, WeightConfig(rating_rule="value"))
    assert dict(zip(ds.frame["item_id"], ds.frame["weight"], strict=True))["d"] == 5.0


def test_time_decay_halves_weight_per_half_life() -> None:
    day, t0 = 86_400_000, 1_700_000_000_000
    f = _frame([("u", "a", t0, "click", None), ("u", "b", t0 + 2 * day, "click", None)])
    ds = Dataset.from_frame(f, WeightConfig(time_decay_days=2))
    assert ds.frame["weight"].tolist() == pytest.approx([0.5, 1.0])


def test_matrix_sums_repeats_and_keeps_negatives() -> None:
    f = _frame([("u", "a", 1, "click", None), ("u", "a", 2, "click", None), ("u", "b", 3, "dislike", None)])
    ds = Dataset.from_frame(f)
    m = ds.matrix().toarray()
    assert m[0, ds.item_index["a"]] == 2.0 and m[0, ds.item_index["b"]] < 0
    assert ds.binary_matrix().toarray().tolist() == [[1.0, 0.0]]


def test_item_popularity_counts_distinct_positive_users() -> None:
    """Novelty and ARP read popularity as a share of users: repeats by one user count once."""
    f = _frame(
        [
            ("u", "a", 1, "click", None),
            ("u", "a", 2, "click", None),
            ("u", "a", 3, "purchase", None),
            ("v", "a", 4, "click", None),
            ("w", "b", 5, "click", None),
            ("x", "b", 6, "dislike", None),  # negative: not a positive user
            ("x", "c", 7, "dislike", None),
        ]
    )
    ds = Dataset.from_frame(f)
    pop = ds.item_popularity()
    assert pop.dtype == np.float32
    assert {i: pop[ds.item_index[i]] for i in "abc"} == {"a": 2.0, "b": 1.0, "c": 0.0}
    assert pop.max() <= ds.n_users
    assert Dataset.from_frame(_frame([("x", "c", 1, "dislike", None)])).item_popularity().tolist() == [0.0]


def test_item_popularity_decays_each_pair_from_its_latest_event() -> None:
    day, t0 = 86_400_000, 1_700_000_000_000
    f = _frame(
        [
            ("u", "a", t0, "click", None),
            ("u", "a", t0 + 2 * day, "click", None),  # u's latest on a: now → weight 1
            ("v", "a", t0, "click", None),  # one half-life old → 0.5
            ("w", "b", t0 + 2 * day, "click", None),
        ]
    )
    ds = Dataset.from_frame(f)
    pop = ds.item_popularity(half_life_days=2)
    assert pop[ds.item_index["a"]] == pytest.approx(1.5) and pop[ds.item_index["b"]] == pytest.approx(1.0)


def test_item_popularity_ignores_repeated_histories(toy_dataset) -> None:
    """Every user repeating their whole history leaves popularity unchanged."""
    once = toy_frame()
    twice = Dataset.from_frame(normalize_frame(pd.concat([once, once.assign(timestamp=once["timestamp"] + 1)])))
    assert len(twice) == 2 * len(toy_dataset)
    np.testing.assert_array_equal(twice.item_popularity(), toy_dataset.item_popularity())
    f = toy_dataset.frame
    assert toy_dataset.item_popularity().sum() == len(f.drop_duplicates(["uidx", "iidx"]))


def test_min_interaction_filters_iterate() -> None:
    f = _frame(
        [
            ("u1", "a", 1, "click", None),
            ("u1", "b", 2, "click", None),
            ("u2", "a", 3, "click", None),
            ("u3", "c", 4, "click", None),
        ]
    )
    ds = Dataset.from_frame(f, filters=FilterConfig(min_user_interactions=2, min_item_interactions=1))
    assert set(ds.user_ids) == {"u1"}
    with pytest.raises(DatasetError, match="no interactions left"):
        Dataset.from_frame(f, filters=FilterConfig(min_user_interactions=5))


def test_per_user_temporal_split_takes_each_users_latest(toy_dataset) -> None:
    s = split_dataset(toy_dataset, "per-user-temporal:0.25")
    assert s.train.item_ids is toy_dataset.item_ids
    tr, te = s.train.frame, s.test.frame
    for u in tr["user_id"].unique()[:10]:
        assert tr[tr.user_id == u]["timestamp"].max() <= te[te.user_id == u]["timestamp"].min()
        assert len(te[te.user_id == u]) == 3  # 25 % of 12
    assert len(tr) + len(te) == len(toy_dataset)


def test_global_temporal_and_random_splits(toy_dataset) -> None:
    g = split_dataset(toy_dataset, "global-temporal:0.2")
    assert g.train.frame["timestamp"].max() <= g.test.frame["timestamp"].min()
    r1 = split_dataset(toy_dataset, "random:0.3", seed=1)
    r2 = split_dataset(toy_dataset, "random:0.3", seed=1)
    r3 = split_dataset(toy_dataset, "random:0.3", seed=2)
    assert r1.test.frame.equals(r2.test.frame) and not r1.test.frame.equals(r3.test.frame)
    assert 0.2 < len(r1.test) / len(toy_dataset) < 0.4


@pytest.mark.parametrize("spec", ["sideways:0.2", "random:1.5", "random:abc"])
def test_bad_split_specs(spec: str) -> None:
    with pytest.raises(DatasetError):
        parse_split(spec)


def test_histories_are_time_ordered(toy_dataset) -> None:
    items, w, ts = toy_dataset.histories()[0]
    assert np.all(np.diff(ts) >= 0) and items.size == 12 and np.all(w > 0)


def test_untyped_rows_with_a_value_are_ratings_and_unknown_types_get_the_default_weight() -> None:
    f = _frame([("u", "a", 1, "", 4.0), ("u", "b", 2, "", None), ("u", "c", 3, "teleport", None)])
    ds = Dataset.from_frame(f, WeightConfig(rating_rule="value", default_weight=0.25))
    w = dict(zip(ds.frame["item_id"], ds.frame["weight"], strict=True))
    assert w == {"a": 4.0, "b": 0.25, "c": 0.25}


def test_content_hash_follows_the_rows_not_the_object() -> None:
    rows = [("u1", "a", 1, "click", None), ("u2", "b", 2, "view", None)]
    h = Dataset.from_frame(_frame(rows)).content_hash()
    assert h == Dataset.from_frame(_frame(list(rows))).content_hash()
    assert h != Dataset.from_frame(_frame([("u1", "b", 1, "click", None), ("u2", "a", 2, "view", None)])).content_hash()
    assert h != Dataset.from_frame(_frame([*rows[:1], ("u2", "b", 3, "view", None)])).content_hash()
