"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recmesh.training.evaluation.metrics import beyond_accuracy, popularity_deciles, ranking_metrics


def test_hand_computed_single_user() -> None:
    # ranks 1..5: hit, miss, hit, miss, miss; 3 relevant items in total
    hits = np.array([[1, 0, 1, 0, 0]], dtype=bool)
    m = ranking_metrics(hits, np.array([3]), (1, 3, 5))
    dcg = 1 + 1 / math.log2(4)
    idcg3 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg@5"][0] == pytest.approx(dcg / idcg3)
    assert m["ndcg@1"][0] == pytest.approx(1.0)
    assert m["recall@5"][0] == pytest.approx(2 / 3)
    assert m["precision@5"][0] == pytest.approx(2 / 5)
    assert m["map@5"][0] == pytest.approx((1 + 2 / 3) / 3)
    assert m["map@1"][0] == pytest.approx(1.0)
    assert m["hit_rate@3"][0] == 1.0 and m["mrr@5"][0] == 1.0


def test_no_hits_and_late_hit() -> None:
    hits = np.array([[0, 0, 0], [0, 0, 1]], dtype=bool)
    m = ranking_metrics(hits, np.array([2, 1]), (2, 3))
    assert m["ndcg@3"].tolist() == pytest.approx([0.0, 0.5])  # 1/log2(4) over ideal 1
    assert m["hit_rate@2"].tolist() == [0.0, 0.0]
    assert m["mrr@3"].tolist() == pytest.approx([0.0, 1 / 3])
    assert m["recall@3"].tolist() == pytest.approx([0.0, 1.0])


def test_ideal_dcg_is_capped_at_k() -> None:
    hits = np.ones((1, 2), dtype=bool)
    m = ranking_metrics(hits, np.array([10]), (2,))
    assert m["ndcg@2"][0] == pytest.approx(1.0)
    assert m["map@2"][0] == pytest.approx(1.0)


def test_beyond_accuracy() -> None:
    pop = np.array([8, 4, 2, 1, 0], dtype=float)  # distinct users per item, 8 users
    recs = np.array([[0, 1], [0, 3]])
    out = beyond_accuracy(recs, pop, n_train_users=8, ks=(2,), head_fraction=0.2)
    assert out["coverage@2"] == pytest.approx(3 / 5)
    assert out["novelty@2"] == pytest.approx((0 + 0 + 1 + 3) / 4)  # -log2(8/8, 8/8, 4/8, 1/8)
    assert out["arp@2"] == pytest.approx((1 + 1 + 0.5 + 0.125) / 4)
    assert out["long_tail_share@2"] == pytest.approx(0.5)  # head = item 0 only
    assert out["long_tail_coverage@2"] == pytest.approx(2 / 4)


def test_popularity_deciles_sum_to_one() -> None:
    pop = np.arange(100, 0, -1, dtype=float)
    recs = np.array([[0, 1, 95, -1]])
    d = popularity_deciles(recs, pop, k=4)
    assert sum(d) == pytest.approx(1.0) and d[0] == pytest.approx(2 / 3) and d[9] == pytest.approx(1 / 3)


def test_history_weights_fast_path_matches_the_per_user_path():
    """Without recency the evaluator builds the history matrix in one go; it must equal the per-user build."""
    from recmesh.training.dataset import Dataset, split_dataset
    from recmesh.training.evaluation import evaluator as ev
    from recmesh.training.models import fit_model

    from .conftest import toy_frame

    split = split_dataset(Dataset.from_frame(toy_frame(n_users=30, n_items=20, per_user=8)), "per-user-temporal:0.2")
    art = fit_model("als", split.train, {"factors": 4, "iterations": 2})
    assert art.half_life is None
    fast = ev._history_weights(art, split)
    art.encoder["half_life"] = 1e15  # the per-user path, with a decay too slow to matter
    slow = ev._history_weights(art, split)
    assert fast.nnz == slow.nnz > 0 and abs(fast - slow).max() < 1e-6
