"""The evaluator's top-k against a full sort (ties, excluded items, rows with fewer than k candidates)."""

from __future__ import annotations

import numpy as np

from recmesh.training.evaluation.evaluator import top_k


def _reference(scores: np.ndarray, k: int) -> np.ndarray:
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    for r, row in enumerate(scores):
        finite = np.flatnonzero(np.isfinite(row))
        best = finite[np.lexsort((finite, -row[finite]))][:k]
        out[r, : best.size] = best
    return out


def test_top_k_matches_a_full_sort_with_ties_and_exclusions() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(0, 6, size=(40, 300)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf  # excluded (seen) items
    scores[3, 5:] = -np.inf  # a row with only five candidates
    scores[4] = -np.inf  # a row with none
    for k in (1, 10, 50):
        assert (top_k(scores, k) == _reference(scores, k)).all()


def test_top_k_of_continuous_scores_is_the_descending_order() -> None:
    scores = np.random.default_rng(0).standard_normal((8, 1000)).astype(np.float32)
    got = top_k(scores, 20)
    assert (got == np.argsort(-scores, axis=1, kind="stable")[:, :20]).all()
