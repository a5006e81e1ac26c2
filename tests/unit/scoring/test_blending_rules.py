"""Blending (weighted RRF), rules (filters, boosts) and MMR diversity of the scoring service."""

from __future__ import annotations

import numpy as np

from recmesh.scoring.blending import RRF_K0, Candidate, rrf_blend
from recmesh.scoring.rules import apply_boosts, diversify, filter_candidates, mmr_order


def test_rrf_sums_weighted_reciprocal_ranks_and_keeps_the_strongest_source():
    sources = {
        "model": [("a", None), ("b", None), ("c", None)],
        "covisit": [("c", "x"), ("d", "x")],
        "trending": [("d", None)],
    }
    out = rrf_blend(sources, {"model": 1.0, "covisit": 2.0, "trending": 0.5})
    by_id = {c.item_id: c for c in out}
    assert by_id["c"].score == 1.0 / (RRF_K0 + 3) + 2.0 / (RRF_K0 + 1)
    assert by_id["c"].source == "covisit" and by_id["c"].ref == "x"  # covisit contributed more
    assert by_id["d"].score == 2.0 / (RRF_K0 + 2) + 0.5 / (RRF_K0 + 1)
    assert [c.item_id for c in out] == ["c", "d", "a", "b"]


def test_rrf_ignores_zero_weight_sources_and_changes_with_weights():
    sources = {"model": [("a", None), ("b", None)], "trending": [("b", None), ("a", None)]}
    assert [c.item_id for c in rrf_blend(sources, {"model": 1.0, "trending": 0.0})] == ["a", "b"]
    assert [c.item_id for c in rrf_blend(sources, {"model": 0.1, "trending": 1.0})] == ["b", "a"]
    assert rrf_blend(sources, {}) == []


def test_rrf_ties_keep_first_appearance_order():
    out = rrf_blend({"model": [("x", None)], "trending": [("y", None)]}, {"model": 1.0, "trending": 1.0})
    assert [c.item_id for c in out] == ["x", "y"]


def test_filter_drops_blocked_outside_allowed_and_outside_category():
    cands = [Candidate(i, 1.0, "model") for i in "abcde"]
    cats = {"a": {"news"}, "b": {"sport"}, "c": {"news"}, "d": {"news"}, "e": set()}
    out = filter_candidates(cands, blocked={"c"}, allowed={"a", "c", "d", "e"}, category="news",
                            categories_of=lambda i: cats[i])  # fmt: skip
    assert [c.item_id for c in out] == ["a", "d"]


def test_boosts_multiply_item_and_category_factors_and_resort():
    cands = [Candidate("a", 3.0, "model"), Candidate("b", 2.0, "model"), Candidate("c", 1.0, "model")]
    out = apply_boosts(cands, {"c": 4.0}, {"sport": 0.1}, lambda i: {"sport"} if i == "a" else set())
    assert [c.item_id for c in out] == ["c", "b", "a"]
    assert out[0].score == 4.0 and abs(out[2].score - 0.3) < 1e-9


def test_mmr_with_lambda_one_keeps_relevance_order():
    rel = np.array([0.9, 0.8, 0.7])
    emb = np.eye(3, dtype=np.float32)
    assert mmr_order(rel, emb, 1.0, 3) == [0, 1, 2]


def test_mmr_diversifies_near_duplicates():
    # items 0-2 are near-duplicates (cluster A), 3-4 a second cluster with slightly lower relevance
    a = np.array([1.0, 0.0], dtype=np.float32)
    b = np.array([0.0, 1.0], dtype=np.float32)
    emb = np.stack([a, a, a, b, b])
    rel = np.array([1.0, 0.99, 0.98, 0.9, 0.89])
    assert mmr_order(rel, emb, 1.0, 3) == [0, 1, 2]
    assert mmr_order(rel, emb, 0.5, 3)[:2] == [0, 3]  # the second pick comes from the other cluster
    cands = [Candidate(str(i), float(r), "model") for i, r in enumerate(rel)]
    assert [c.item_id for c in diversify(cands, emb, 0.5, 2)] == ["0", "3"]
    assert [c.item_id for c in diversify(cands, emb, 1.0, 2)] == ["0", "1"]
