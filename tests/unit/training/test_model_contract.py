"""Contract every registered model must meet (lenskit-style shared suite)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from recmesh.core.artifacts import ModelArtifact
from recmesh.training.dataset import Dataset
from recmesh.training.evaluation import EvalConfig, evaluate
from recmesh.training.models import REGISTRY, ModelError, fit_model, make_config, model_names

# small settings keep the suite fast; every model still runs its real code path
FAST: dict[str, dict] = {
    "als": {"factors": 8, "iterations": 5},
    "bpr": {"factors": 8, "iterations": 20},
    "itemknn": {"neighbors": 10},
    "default": {"seq_step": 3},
}
# models added by other modules: only the keys their config knows are applied
FAST_EXTRA: dict[str, dict] = {"sasrec": {"dim": 16, "n_layers": 1, "epochs": 3, "batch_size": 64}}
BUILTIN = {"popularity", "itemknn", "ease", "als", "bpr", "default"}

MODELS = model_names()


def _params(name: str) -> dict:
    if name in FAST:
        return dict(FAST[name])
    known = REGISTRY[name].config_cls.model_fields
    return {k: v for k, v in FAST_EXTRA.get(name, {}).items() if k in known}


@pytest.fixture(scope="module")
def fitted(toy_split) -> dict[str, ModelArtifact]:
    return {name: fit_model(name, toy_split.train, _params(name)) for name in MODELS}


def _history(ds: Dataset, user: int) -> tuple[np.ndarray, np.ndarray]:
    items, w, _ = ds.histories()[user]
    return items, w


def test_registry_has_the_classical_models() -> None:
    assert {"popularity", "itemknn", "ease", "als", "bpr", "default"} <= set(REGISTRY)


@pytest.mark.parametrize("name", MODELS)
def test_fit_gives_a_consistent_artifact(name: str, fitted, toy_split) -> None:
    art = fitted[name]
    assert art.name == name
    assert art.item_ids == [str(i) for i in toy_split.train.item_ids]
    assert art.popularity.shape == (toy_split.train.n_items,)
    assert art.metrics["fit_seconds"] >= 0
    assert art.dataset_hash and art.code_version
    scores = art.score_history(*_history(toy_split.train, 0))
    assert scores.shape == (art.n_items,) and np.isfinite(scores).all()


@pytest.mark.parametrize("name", MODELS)
def test_deterministic_with_a_seed(name: str, fitted, toy_split) -> None:
    again = fit_model(name, toy_split.train, _params(name))
    items, w = _history(toy_split.train, 3)
    np.testing.assert_allclose(
        again.score_history(items, w), fitted[name].score_history(items, w), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", MODELS)
def test_excluded_training_items_are_never_returned(name: str, fitted, toy_split) -> None:
    art = fitted[name]
    for user in range(5):
        items, w = _history(toy_split.train, user)
        top, _ = art.recommend(items, w, k=10, exclude=items)
        assert len(top) == 10
        assert not set(top.tolist()) & set(items.tolist())


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_gives_identical_scores(name: str, fitted, toy_split) -> None:
    art = fitted[name]
    back = ModelArtifact.load(art.save(f"memory://contract-{uuid.uuid4().hex}/{name}"))
    for user in (0, 1, 7):
        items, w = _history(toy_split.train, user)
        np.testing.assert_array_equal(back.score_history(items, w), art.score_history(items, w))
    assert back.encoder == art.encoder and back.params == art.params


@pytest.mark.parametrize("name", MODELS)
def test_recency_weighting_is_supported(name: str, fitted, toy_split) -> None:
    """Recent events must be able to count more: a half-life, or an order-aware encoder."""
    items, _ = _history(toy_split.train, 2)
    if fitted[name].encoder.get("type") == "torch":
        art = fitted[name]
        fwd = art.score_history(items, art.history_weights(n=items.size))
        rev = art.score_history(items[::-1], art.history_weights(n=items.size))
        assert not np.allclose(fwd, rev)
        return
    art = fit_model(name, toy_split.train, {**_params(name), "half_life": 2.0})
    assert art.half_life == 2.0
    w = art.history_weights(n=4)
    assert w[-1] == pytest.approx(1.0) and w[0] < w[-1]
    if name != "popularity":
        newest_first = art.score_history(items, art.history_weights(n=items.size))
        oldest_first = art.score_history(items[::-1], art.history_weights(n=items.size))
        assert not np.allclose(newest_first, oldest_first)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_params_are_rejected(name: str) -> None:
    with pytest.raises(ModelError, match="invalid params"):
        make_config(name, {"no_such_param": 1})


@pytest.mark.parametrize("name", sorted(BUILTIN - {"popularity"}))
def test_personalised_models_beat_chance_on_clustered_data(name: str, fitted, toy_split) -> None:
    """Toy users like only even or only odd items; a classical model must learn that.

    (Neural models need more data than this toy set; their quality is checked by the benchmarks.)
    """
    res = evaluate(fitted[name], toy_split, EvalConfig(ks=(5,)))
    assert res.metrics["precision@5"] > 0.2  # random would be ≈ 0.12 (≈ 3.5 of 22 unseen are relevant)


def test_unknown_model_is_a_clear_error(toy_dataset) -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        fit_model("nope", toy_dataset)
