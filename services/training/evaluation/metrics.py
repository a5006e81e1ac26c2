"""Ranking and beyond-accuracy metrics, vectorised over users.

Accuracy metrics take ``hits`` (users × K booleans: is the item at rank j relevant) and
``n_relevant`` (relevant test items per user) and return one value per user:

* HitRate@k — any hit in the top k;
* Recall@k — hits / n_relevant;
* Precision@k — hits / k;
* NDCG@k — Σ hitⱼ / log₂(j + 2) over the ideal DCG of min(n_relevant, k) hits;
* MAP@k — Σ Precision@j · hitⱼ / min(n_relevant, k);
* MRR@k — 1 / rank of the first hit.

Beyond-accuracy metrics look at all top-k lists together: catalog coverage, novelty
(mean self-information −log₂ of the item's training popularity), average recommendation
popularity (ARP) and the long-tail share.
"""

from __future__ import annotations

import numpy as np

ACCURACY = ("ndcg", "recall", "precision", "map", "hit_rate", "mrr")


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def ranking_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: list[int] | tuple[int, ...]) -> dict[str, np.ndarray]:
    """Per-user accuracy metrics for every k in ``ks`` (``hits`` has at least max(ks) columns)."""
    hits = np.asarray(hits, dtype=bool)
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    if hits.ndim != 2 or hits.shape[0] != n_rel.shape[0]:
        raise ValueError("hits must be users × K and match n_relevant")
    kmax = max(ks)
    if hits.shape[1] < kmax:
        hits = np.pad(hits, ((0, 0), (0, kmax - hits.shape[1])))
    h = hits[:, :kmax].astype(np.float64)
    disc = _discounts(kmax)
    cum_hits = np.cumsum(h, axis=1)
    prec_at_j = cum_hits / np.arange(1, kmax + 1)
    safe_rel = np.maximum(n_rel, 1.0)
    first = np.where(h.any(axis=1), h.argmax(axis=1) + 1, 0)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        n_hit = cum_hits[:, k - 1]
        ideal = np.cumsum(disc[:k])[np.clip(np.minimum(n_rel, k).astype(np.int64), 1, k) - 1]
        out[f"ndcg@{k}"] = (h[:, :k] @ disc[:k]) / ideal
        out[f"recall@{k}"] = n_hit / safe_rel
        out[f"precision@{k}"] = n_hit / k
        out[f"map@{k}"] = (prec_at_j[:, :k] * h[:, :k]).sum(axis=1) / np.minimum(safe_rel, k)
        out[f"hit_rate@{k}"] = (n_hit > 0).astype(np.float64)
        out[f"mrr@{k}"] = np.where((first > 0) & (first <= k), 1.0 / np.maximum(first, 1), 0.0)
    for v in out.values():
        v[n_rel <= 0] = 0.0
    return out


def beyond_accuracy(
    recs: np.ndarray,
    item_popularity: np.ndarray,
    n_train_users: int,
    ks: list[int] | tuple[int, ...],
    head_fraction: float = 0.2,
) -> dict[str, float]:
    """Coverage, novelty, ARP and long-tail share of the top-k lists ``recs`` (users × K, −1 pads).

    ``item_popularity`` counts distinct training users per item. The short head is the most
    popular ``head_fraction`` of the catalog; everything else is the long tail.
    """
    n_items = item_popularity.shape[0]
    pop = np.asarray(item_popularity, dtype=np.float64)
    p = np.clip(pop / max(n_train_users, 1), 1.0 / max(n_train_users, 1), 1.0)
    info = -np.log2(p)
    order = np.argsort(-pop, kind="stable")
    head = np.zeros(n_items, dtype=bool)
    head[order[: max(1, int(round(head_fraction * n_items)))]] = True
    tail_items = int((~head).sum())
    out: dict[str, float] = {}
    for k in ks:
        r = recs[:, :k]
        valid = r >= 0
        items = r[valid]
        if items.size == 0:
            out.update({f"coverage@{k}": 0.0, f"novelty@{k}": 0.0, f"arp@{k}": 0.0, f"long_tail_share@{k}": 0.0})
            out[f"long_tail_coverage@{k}"] = 0.0
            continue
        uniq = np.unique(items)
        out[f"coverage@{k}"] = float(uniq.size / n_items)
        out[f"novelty@{k}"] = float(info[items].mean())
        out[f"arp@{k}"] = float(p[items].mean())
        out[f"long_tail_share@{k}"] = float((~head[items]).mean())
        out[f"long_tail_coverage@{k}"] = float((~head[uniq]).sum() / tail_items) if tail_items else 0.0
    return out


def popularity_deciles(recs: np.ndarray, item_popularity: np.ndarray, k: int, bins: int = 10) -> list[float]:
    """Share of top-k recommendations falling in each popularity decile (most popular first)."""
    n_items = item_popularity.shape[0]
    order = np.argsort(-np.asarray(item_popularity), kind="stable")
    rank = np.empty(n_items, dtype=np.int64)
    rank[order] = np.arange(n_items)
    r = recs[:, :k]
    items = r[r >= 0]
    if items.size == 0:
        return [0.0] * bins
    decile = np.minimum(rank[items] * bins // max(n_items, 1), bins - 1)
    counts = np.bincount(decile, minlength=bins)
    return [float(c) for c in counts / counts.sum()]
