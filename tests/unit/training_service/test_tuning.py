"""Optuna tuning: seeded runs give the same best parameters; the test split is never touched."""

from __future__ import annotations

import pytest

from recmesh.training import tuning as tuning_mod
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


def _keys(ds) -> set[tuple[str, str, int]]:
    f = ds.frame
    return set(zip(f["user_id"].astype(str), f["item_id"].astype(str), f["timestamp"].astype(int), strict=True))


def test_tuning_only_sees_the_training_rows(toy, monkeypatch):
    """Every row tuning fits on or validates against comes from the outer train split."""
    ds = Dataset.from_frame(toy)
    split = split_dataset(ds, "per-user-temporal:0.2")
    fitted, validated = [], []

    real_fit, real_evaluate = tuning_mod.fit_model, tuning_mod.evaluate

    def spy_fit(name, train, params):
        fitted.append(train)
        return real_fit(name, train, params)

    def spy_evaluate(art, inner, cfg):
        validated.append(inner)
        return real_evaluate(art, inner, cfg)

    monkeypatch.setattr(tuning_mod, "fit_model", spy_fit)
    monkeypatch.setattr(tuning_mod, "evaluate", spy_evaluate)
    res = tune("popularity", split.train, n_trials=2, seed=1, eval_max_users=None)
    assert res.val_split.startswith("per-user-temporal")
    assert len(fitted) == 2 and len(validated) == 2

    test_keys, train_keys = _keys(split.test), _keys(split.train)
    assert len(test_keys) == len(split.test) and test_keys.isdisjoint(train_keys)  # keys identify rows here
    seen = set().union(*(_keys(d) for d in fitted), *(_keys(s.train) | _keys(s.test) for s in validated))
    assert seen and seen.isdisjoint(test_keys)
    assert seen <= train_keys
    # the inner split is a real split of the training rows: validation rows are never fitted on
    assert all(_keys(s.test).isdisjoint(_keys(d)) for s, d in zip(validated, fitted, strict=True))
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


def test_first_trial_is_the_model_defaults_so_tuning_never_loses_to_them(toy):
    """Trial 0 reproduces the recipe's defaults (a short budget can only improve on them on validation)."""
    from recmesh.training.models import make_config

    ds = Dataset.from_frame(toy)
    train = split_dataset(ds, "per-user-temporal:0.2").train
    res = tune("default", train, n_trials=3, seed=3, eval_max_users=None)
    first = res.history[0]["params"]
    defaults = make_config("default", {}).model_dump()
    for key in ("half_life", "l2", "seq_weight", "seq_l2", "seq_half_life", "popularity_blend"):
        assert first[key] == defaults[key], key
    assert res.best_value >= res.history[0]["value"]
    assert len({tuple(sorted(h["params"].items())) for h in res.history}) == 3  # the sampler still explores


def test_no_half_life_choice_switches_recency_off(toy):
    import optuna

    trial = optuna.trial.FixedTrial({"use_half_life": False, "popularity_blend": 0.1})
    params = tuning_mod._common(trial)  # the space of models without one of their own
    assert params == {"half_life": None, "popularity_blend": 0.1}
