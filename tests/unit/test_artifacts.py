"""The shared artifact format: round trips, encoders and the exact ALS fold-in."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from recmesh.core.artifacts import ArtifactError, ModelArtifact, fold_in_als, recency_weights


def _vectors_artifact(rng: np.random.Generator, n_items: int = 30, dim: int = 8) -> ModelArtifact:
    return ModelArtifact(
        name="als",
        kind="vectors",
        item_ids=[f"i{k}" for k in range(n_items)],
        popularity=rng.random(n_items).astype(np.float32),
        params={"factors": dim},
        encoder={"type": "als_fold_in", "regularization": 0.1, "alpha": 2.0, "half_life": 3.0},
        item_vectors=rng.normal(size=(n_items, dim)).astype(np.float32),
        user_ids=["u1", "u2"],
        user_vectors=rng.normal(size=(2, dim)).astype(np.float32),
        data_range={"n_users": 2},
        dataset_hash="abc",
        code_version="test",
        extra={"version": 7},
    )


def _uri() -> str:
    return f"memory://artifacts-{uuid.uuid4().hex}/model"


def test_vector_round_trip_keeps_arrays_metadata_and_scores() -> None:
    art = _vectors_artifact(np.random.default_rng(0))
    uri = art.save(_uri())
    back = ModelArtifact.load(uri)
    assert back.name == "als" and back.kind == "vectors" and back.item_ids == art.item_ids
    assert back.params == art.params and back.encoder == art.encoder and back.extra == {"version": 7}
    np.testing.assert_array_equal(back.item_vectors, art.item_vectors)
    np.testing.assert_array_equal(back.user_vectors, art.user_vectors)
    assert back.user_index == {"u1": 0, "u2": 1}
    hist, w = np.array([3, 5, 9]), np.array([1.0, 0.5, 2.0], dtype=np.float32)
    np.testing.assert_array_equal(back.score_history(hist, w), art.score_history(hist, w))


def test_item_item_dense_and_neighbor_formats_score_the_same() -> None:
    rng = np.random.default_rng(1)
    n = 12
    dense = rng.random((n, n)).astype(np.float32)
    np.fill_diagonal(dense, 0)
    order = np.argsort(-dense, axis=1)[:, : n - 1].astype(np.int32)
    neigh_scores = np.take_along_axis(dense, order, axis=1)
    pop = rng.random(n).astype(np.float32)
    ids = [str(k) for k in range(n)]
    a = ModelArtifact(name="ease", kind="item_item", item_ids=ids, popularity=pop, item_item=dense)
    b = ModelArtifact(
        name="knn", kind="item_item", item_ids=ids, popularity=pop, neighbors=order, neighbor_scores=neigh_scores
    )
    b2 = ModelArtifact.load(b.save(_uri()))
    assert b2.neighbors is not None and b2.item_item is None
    hist, w = np.array([0, 4, 4, 7]), np.array([0.2, 1.0, 0.5, 1.0], dtype=np.float32)
    np.testing.assert_allclose(a.score_history(hist, w), b2.score_history(hist, w), rtol=1e-5, atol=1e-6)


def test_empty_history_falls_back_to_popularity() -> None:
    art = _vectors_artifact(np.random.default_rng(2))
    np.testing.assert_array_equal(art.score_history([], []), art.popularity)


def test_save_refuses_to_overwrite_and_leaves_no_temp_dirs() -> None:
    import fsspec

    art = _vectors_artifact(np.random.default_rng(3))
    uri = _uri()
    art.save(uri)
    with pytest.raises(ArtifactError, match="refusing to overwrite"):
        art.save(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    siblings = [p.rsplit("/", 1)[-1] for p in fs.ls(path.rsplit("/", 1)[0], detail=False)]
    assert siblings == ["model"]


def test_load_missing_artifact_is_a_clear_error() -> None:
    with pytest.raises(ArtifactError, match="meta.json missing"):
        ModelArtifact.load(_uri())


def test_inconsistent_shapes_are_rejected() -> None:
    with pytest.raises(ArtifactError):
        ModelArtifact(
            name="x", kind="vectors", item_ids=["a", "b"], popularity=np.ones(2), item_vectors=np.ones((3, 2))
        )
    with pytest.raises(ArtifactError):
        ModelArtifact(name="x", kind="item_item", item_ids=["a"], popularity=np.ones(1))


def _direct_solution(y: np.ndarray, idx: np.ndarray, conf: np.ndarray, reg: float) -> np.ndarray:
    """Hu-Koren-Volinsky normal equations built from the full confidence matrix."""
    n, d = y.shape
    c = np.ones(n)
    p = np.zeros(n)
    c[idx] = np.abs(conf)
    p[idx] = (conf > 0).astype(float)
    # implicit: a negative confidence only adds (|c| - 1) to the left side, nothing to the right
    a = y.T @ (c[:, None] * y) + reg * np.eye(d)
    b = y.T @ (c * p)
    return np.linalg.solve(a, b)


def test_fold_in_equals_direct_solve() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=(50, 6))
    idx = np.array([1, 7, 20, 33])
    conf = np.array([1.0, 3.0, 0.5, 2.0])
    alpha = 4.0
    got = fold_in_als(y, idx, conf, regularization=0.3, alpha=alpha)
    np.testing.assert_allclose(got, _direct_solution(y, idx, conf * alpha, 0.3), rtol=1e-4, atol=1e-5)
    # with the precomputed YtY and float32 factors (the per-click path)
    y32 = y.astype(np.float32)
    fast = fold_in_als(y32, idx, conf, 0.3, alpha, yty=y32.T.astype(np.float64) @ y32.astype(np.float64))
    np.testing.assert_allclose(fast, got, rtol=1e-3, atol=1e-4)


def test_fold_in_matches_implicit_recalculate_user() -> None:
    implicit_als = pytest.importorskip("implicit.cpu.als")
    import scipy.sparse as sp

    rng = np.random.default_rng(5)
    x = sp.random(40, 25, density=0.2, format="csr", random_state=5, dtype=np.float32)
    x.data[:] = rng.integers(1, 4, size=x.data.size)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = implicit_als.AlternatingLeastSquares(
            factors=6, regularization=0.2, alpha=3.0, iterations=3, random_state=0
        )
        model.fit(x, show_progress=False)
    row = x[7]
    expected = model.recalculate_user(7, row)
    got = fold_in_als(model.item_factors, row.indices, row.data, 0.2, alpha=3.0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_duplicate_items_sum_like_a_sparse_matrix() -> None:
    y = np.random.default_rng(6).normal(size=(10, 3))
    a = fold_in_als(y, [2, 2, 5], [1.0, 2.0, 1.0], 0.1)
    b = fold_in_als(y, [2, 5], [3.0, 1.0], 0.1)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_recency_weights() -> None:
    w = recency_weights([0, 1, 2, 3], half_life=1)
    np.testing.assert_allclose(w, [0.125, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(recency_weights([0, 10], half_life=10, floor=0.2), [0.6, 1.0])
    np.testing.assert_array_equal(recency_weights([5, 7], half_life=None), [1.0, 1.0])
    ms = recency_weights([0, 86_400_000], half_life=86_400_000.0)
    np.testing.assert_allclose(ms, [0.5, 1.0])


def test_history_weights_follow_the_encoder() -> None:
    art = _vectors_artifact(np.random.default_rng(7))
    np.testing.assert_allclose(art.history_weights(n=3), [0.629961, 0.793701, 1.0], rtol=1e-5)
    np.testing.assert_allclose(art.history_weights(values=[2.0, 2.0, 2.0]), [1.259921, 1.587401, 2.0], rtol=1e-5)


def test_torch_encoder_without_torch_falls_back_to_mean_once(monkeypatch, caplog) -> None:
    """Scoring has no torch: a sequence model's history encoder must degrade, not raise (500)."""
    import logging
    import sys

    from recmesh.core import artifacts

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    monkeypatch.setattr(artifacts, "_torch_warned", False)
    rng = np.random.default_rng(5)
    art = ModelArtifact(
        name="sasrec",
        kind="vectors",
        item_ids=[f"i{k}" for k in range(10)],
        popularity=rng.random(10).astype(np.float32),
        encoder={"type": "torch", "dim": 4, "max_len": 8, "n_layers": 1, "n_heads": 1},
        item_vectors=rng.normal(size=(10, 4)).astype(np.float32),
        blobs={"encoder.pt": b"not read without torch"},
    )
    idx = np.array([3, 1, 7])  # oldest → newest
    with caplog.at_level(logging.WARNING, logger="recmesh.core.artifacts"):
        vec = art.user_vector_from_history(idx, art.history_weights(n=3))
        again = art.user_vector_from_history(idx, art.history_weights(n=3))
        scores = art.score_history(idx, art.history_weights(n=3))
    w = np.array([1.0, 2.0, 3.0], dtype=np.float32)  # positions: the newest weighs most
    expected = (w[:, None] * art.item_vectors[idx]).sum(axis=0) / w.sum()
    np.testing.assert_allclose(vec, expected, rtol=1e-6)
    np.testing.assert_array_equal(vec, again)
    assert scores.shape == (10,) and np.isfinite(scores).all()
    assert art._torch is False  # no second import attempt
    warnings = [r for r in caplog.records if "torch is not installed" in r.getMessage()]
    assert len(warnings) == 1
