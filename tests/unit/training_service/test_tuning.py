"""Optuna tuning: seeded runs give the same best parameters; the test split is never touched."""

from __future__ import annotations

import pytest

from recmesh.training.dataset import Dataset, split_dataset
from recmesh.training.tuning import TuneResult, sample_split, tune, tuning_section_html


def test_same_seed_same_best_params(toy):
    ds = Dataset.from_frame(toy)
    train = split_dataset(ds, "per-user-temporal:0.2").train
    a = tune("itemknn", train, n_trials=5, seed=7, eval_max_users=None)
    b = tune("itemknn", train, n_trials=5, seed=7, eval_max_users=None)
    assert a.best_params == b.best_params and a.best_value == b.best_value
    assert [h["params"] for h in a.history] == [h["params"] for h in b.history]
    assert len(a.history) == 5 and a.best_value == max(h["value"] for h in a.history)


def test_tuning_only_sees_the_training_rows(toy):
    ds = Dataset.from_frame(toy)
    split = split_dataset(ds, "per-user-temporal:0.2")
    res = tune("popularity", split.train, n_trials=2, seed=1, eval_max_users=None)
    assert res.val_split.startswith("per-user-temporal")
    with pytest.raises(ValueError):
        tune("popularity", split.train, n_trials=0, minutes=None)


def test_sample_split_bounds_users_and_keeps_maps(toy):
    split = split_dataset(Dataset.from_frame(toy), "per-user-temporal:0.2")
    small = sample_split(split, 10, seed=3)
    assert small.test.frame["uidx"].nunique() == 10
    assert set(small.train.frame["uidx"]) == set(small.test.frame["uidx"])
    assert small.train.n_items == split.train.n_items
    assert sample_split(split, 10, seed=3).test.frame.equals(small.test.frame)


def test_report_section_embeds_plot():
    res = TuneResult("als", "ndcg@10", {"factors": 8}, 0.3,
                     history=[{"number": 0, "value": 0.2, "params": {"factors": 4}, "seconds": 0.1},
                              {"number": 1, "value": 0.3, "params": {"factors": 8}, "seconds": 0.1}])  # fmt: skip
    html = tuning_section_html(res)
    assert "data:image/png;base64," in html and "0.3000" in html
