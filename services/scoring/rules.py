"""Business rules over blended candidates: exclusions, filters, boosts and MMR diversity.

Pure functions (no I/O): the engine hands them the blocked ids (seen, request exclusions,
unavailable or deleted catalog items), the optional category filter and include list, the
boosts, and the normalised item vectors for diversity.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

import numpy as np
from numpy.typing import NDArray

from recmesh.scoring.blending import Candidate


def filter_candidates(
    cands: Iterable[Candidate],
    blocked: Collection[str],
    allowed: Collection[str] | None = None,
    category: str | None = None,
    categories_of: Callable[[str], Collection[str]] | None = None,
) -> list[Candidate]:
    """Drop blocked items, items outside ``allowed`` (when given) and outside ``category``."""
    out = []
    for c in cands:
        if c.item_id in blocked:
            continue
        if allowed is not None and c.item_id not in allowed:
            continue
        if category is not None and (categories_of is None or category not in categories_of(c.item_id)):
            continue
        out.append(c)
    return out


def apply_boosts(
    cands: list[Candidate],
    boost_items: Mapping[str, float],
    boost_categories: Mapping[str, float],
    categories_of: Callable[[str], Collection[str]] | None = None,
) -> list[Candidate]:
    """Multiply scores by per-item and per-category factors, then re-sort (stable).

    Several matching categories multiply together. Factors must be positive (validated at the
    edge); a factor < 1 demotes.
    """
    if not boost_items and not boost_categories:
        return cands
    for c in cands:
        f = boost_items.get(c.item_id, 1.0)
        if boost_categories and categories_of is not None:
            for cat in categories_of(c.item_id):
                f *= boost_categories.get(cat, 1.0)
        if f != 1.0:
            c.score *= f
    return sorted(cands, key=lambda cd: -cd.score)


def mmr_order(relevance: NDArray[np.floating], embeddings: NDArray[np.floating], lam: float, k: int) -> list[int]:
    """Maximal marginal relevance: greedily pick ``argmax λ·rel − (1−λ)·max_sim(selected)``.

    ``relevance`` is min-max scaled to [0, 1] so that λ means the same for any score scale;
    ``embeddings`` are unit rows (zero rows = unknown item, similarity 0). λ = 1 keeps the
    relevance order.
    """
    n = int(relevance.shape[0])
    k = min(k, n)
    if k <= 0:
        return []
    if lam >= 1.0 or n == 1:
        return list(np.argsort(-relevance, kind="stable")[:k])
    rel = relevance.astype(np.float64)
    span = float(rel.max() - rel.min())
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    emb = np.asarray(embeddings, dtype=np.float32)
    max_sim = np.zeros(n, dtype=np.float64)
    chosen = np.zeros(n, dtype=bool)
    order: list[int] = []
    for _ in range(k):
        gain = lam * rel - (1.0 - lam) * max_sim
        gain[chosen] = -np.inf
        j = int(np.argmax(gain))
        order.append(j)
        chosen[j] = True
        np.maximum(max_sim, emb @ emb[j], out=max_sim)
    return order


def diversify(cands: list[Candidate], embeddings: NDArray[np.floating], lam: float, k: int) -> list[Candidate]:
    """MMR over candidates (``embeddings`` row i belongs to ``cands[i]``); top-k when λ = 1."""
    if lam >= 1.0 or len(cands) <= 1:
        return cands[:k]
    rel = np.fromiter((c.score for c in cands), dtype=np.float64, count=len(cands))
    return [cands[i] for i in mmr_order(rel, embeddings, lam, k)]
