"""Exact top-k and HNSW recall against it."""

from __future__ import annotations

import numpy as np

from recmesh.scoring.retrieval import ExactIndex, HnswIndex, build_index, recall_at_k, top_k_scores
from recmesh.scoring.settings import ScoringSection


def test_exact_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    v = rng.standard_normal((5000, 16)).astype(np.float32)
    q = rng.standard_normal(16).astype(np.float32)
    idx, sc = ExactIndex(v).search(q, 25)
    full = np.argsort(-(v @ q), kind="stable")[:25]
    assert idx.tolist() == full.tolist()
    assert np.allclose(sc, (v @ q)[full], atol=1e-5)


def test_top_k_edge_cases_and_ties():
    assert top_k_scores(np.array([1.0, 3.0, 3.0, 2.0]), 3)[0].tolist() == [1, 2, 3]
    assert top_k_scores(np.array([1.0, 2.0]), 10)[0].tolist() == [1, 0]
    assert top_k_scores(np.array([1.0]), 0)[0].size == 0


def test_exact_subset_search_stays_in_the_subset():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((1000, 8)).astype(np.float32)
    q = rng.standard_normal(8).astype(np.float32)
    subset = np.arange(0, 1000, 7, dtype=np.int64)
    idx, _ = ExactIndex(v).search_subset(q, subset, 5)
    assert set(idx.tolist()) <= set(subset.tolist())
    assert idx.tolist() == subset[np.argsort(-(v[subset] @ q), kind="stable")[:5]].tolist()


def test_threshold_picks_the_index_kind():
    v = np.zeros((100, 4), dtype=np.float32)
    assert build_index(v, threshold=101).kind == "exact"
    assert build_index(v, threshold=100).kind == "hnsw"


def test_hnsw_recall_at_10_against_exact_on_50k_items():
    """Production HNSW parameters on a 50k × 64 set; ≥ 0.95 of the exact top-10 must be found.

    The set is random but shaped like learned factors (a mixture of 200 Gaussian clusters:
    items and users concentrate around tastes). Isotropic Gaussian noise, which no learned
    model produces, is the known worst case of every graph index and is not what this pins.
    """
    s = ScoringSection()
    rng = np.random.default_rng(7)
    n, d, c = 50_000, 64, 200
    centers = rng.standard_normal((c, d)).astype(np.float32)
    items = (centers[rng.integers(0, c, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    users = (centers[rng.integers(0, c, 300)] + 0.5 * rng.standard_normal((300, d))).astype(np.float32)
    hnsw = HnswIndex(items, m=s.hnsw_m, ef_construction=s.hnsw_ef_construction, ef=s.hnsw_ef)
    exact = ExactIndex(items)
    approx = np.stack([hnsw.search(u, 10)[0] for u in users])
    truth = np.stack([exact.search(u, 10)[0] for u in users])
    assert recall_at_k(approx, truth) >= 0.95
    # scores are the true inner products of the returned items
    idx, sc = hnsw.search(users[0], 10)
    assert np.allclose(sc, items[idx] @ users[0], atol=1e-3)
