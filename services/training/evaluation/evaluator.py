"""Full-ranking offline evaluation of an artifact on a train/test split.

Every test user is scored over the whole catalog through the artifact's own user encoder
(``score_users``: the same code path scoring and personalization use, with its recency
weighting), their training items are excluded, and the top-k list is compared with their
held-out items. No sampled negatives. Users are processed in batches so memory stays
``batch × n_items``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recmesh.core.artifacts import ModelArtifact

from ..dataset import Split
from .metrics import beyond_accuracy, popularity_deciles, ranking_metrics

DEFAULT_KS = (1, 5, 10, 20, 50)


@dataclass
class EvalConfig:
    """What to compute."""

    ks: tuple[int, ...] = DEFAULT_KS
    batch_size: int = 256
    cold_threshold: int = 5  # users with fewer training events form the "cold" segment
    exclude_train: bool = True


@dataclass
class EvalResult:
    """Metrics of one model on one split (JSON-ready through :meth:`to_dict`)."""

    model: str
    metrics: dict[str, float]
    segments: dict[str, dict[str, float]]
    n_users: int
    popularity_deciles: list[float] = field(default_factory=list)
    eval_seconds: float = 0.0
    fit_seconds: float | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "metrics": self.metrics,
            "segments": self.segments,
            "n_users": self.n_users,
            "popularity_deciles": self.popularity_deciles,
            "eval_seconds": round(self.eval_seconds, 4),
            "fit_seconds": self.fit_seconds,
            "params": self.params,
        }


def _history_weights(artifact: ModelArtifact, split: Split) -> sp.csr_matrix:
    """Users × items matrix of the artifact-encoder weights of every user's training history."""
    n_u, n_i = split.train.n_users, split.train.n_items
    hl = artifact.half_life
    if artifact.encoder.get("type") != "torch" and (hl is None or hl <= 0):
        # no recency and no order: the weights are the events' own, summed per (user, item)
        f = split.train.frame
        m = sp.csr_matrix(
            (f["weight"].to_numpy(dtype=np.float32), (f["uidx"].to_numpy(), f["iidx"].to_numpy())),
            shape=(n_u, n_i), dtype=np.float32,
        )  # fmt: skip
        m.sum_duplicates()
        return m
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for u, (items, w, ts) in enumerate(split.train.histories()):
        if items.size == 0:
            continue
        rows.append(np.full(items.size, u, dtype=np.int64))
        cols.append(items)
        vals.append(artifact.history_weights(timestamps_ms=ts, values=w))
    if not rows:
        return sp.csr_matrix((n_u, n_i), dtype=np.float32)
    m = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_u, n_i), dtype=np.float32
    )
    m.sum_duplicates()
    return m


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the ``k`` highest finite scores, best first (ties: lower index), -1 pads.

    Partitions the values (not an argpartition of a negated copy, which allocates a full int64
    index matrix per batch) and sorts only the entries at or above each row's k-th value.
    """
    n_rows, n = scores.shape
    top = np.full((n_rows, k), -1, dtype=np.int64)
    if k <= 0 or n == 0:
        return top
    kth = np.partition(scores, n - k, axis=1)[:, n - k]
    r, c = np.nonzero((scores >= kth[:, None]) & np.isfinite(scores))
    v = scores[r, c]
    order = np.lexsort((c, -v, r))
    r, c = r[order], c[order]
    pos = np.arange(r.size) - np.searchsorted(r, np.arange(n_rows))[r]
    keep = pos < k
    top[r[keep], pos[keep]] = c[keep]
    return top


def _align(artifact: ModelArtifact, split: Split) -> np.ndarray | None:
    """Dataset item index → artifact item index, or None when they already coincide."""
    ds_items = [str(i) for i in split.train.item_ids]
    if ds_items == artifact.item_ids:
        return None
    idx = artifact.item_index
    return np.array([idx.get(i, -1) for i in ds_items], dtype=np.int64)


def evaluate(
    artifact: ModelArtifact,
    split: Split,
    config: EvalConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Full-ranking metrics of ``artifact`` on ``split`` (see module docstring)."""
    cfg = config or EvalConfig()
    t0 = time.perf_counter()
    ks = tuple(sorted(set(cfg.ks)))
    kmax = max(ks)
    train, test = split.train, split.test
    n_items = train.n_items
    align = _align(artifact, split)
    if align is not None:
        raise ValueError("artifact catalog differs from the split's; fit the model on split.train")

    seen = train.matrix()
    seen.data = np.ones_like(seen.data)
    test_pos = test.subset(test.frame["weight"].to_numpy() > 0).binary_matrix()
    # a held-out item the user already had in training cannot be recommended (it is excluded)
    relevant = (test_pos - test_pos.multiply(seen)).tocsr()
    relevant.eliminate_zeros()
    n_rel_all = np.diff(relevant.indptr)
    users = np.flatnonzero(n_rel_all > 0)
    n_train_events = np.bincount(train.frame["uidx"].to_numpy(), minlength=train.n_users)

    weights = _history_weights(artifact, split)
    recs = np.full((users.size, kmax), -1, dtype=np.int64)
    hits = np.zeros((users.size, kmax), dtype=bool)
    for start in range(0, users.size, cfg.batch_size):
        batch = users[start : start + cfg.batch_size]
        scores = np.asarray(artifact.score_users(weights[batch]), dtype=np.float32)
        if cfg.exclude_train:
            sb = seen[batch].tocoo()
            scores[sb.row, sb.col] = -np.inf
        k = min(kmax, n_items)
        top = top_k(scores, k)
        sl = slice(start, start + batch.size)
        recs[sl, :k] = top
        rel = relevant[batch]
        rel_dense = np.zeros((batch.size, n_items + 1), dtype=bool)
        rr = rel.tocoo()
        rel_dense[rr.row, rr.col] = True
        hits[sl, :k] = rel_dense[np.arange(batch.size)[:, None], np.where(top >= 0, top, n_items)]
        if progress is not None:
            progress(min(start + batch.size, users.size), users.size)

    per_user = ranking_metrics(hits, n_rel_all[users], ks)
    metrics = {name: float(v.mean()) if v.size else 0.0 for name, v in per_user.items()}
    pop = train.item_popularity()
    metrics.update(beyond_accuracy(recs, pop, train.n_users, ks))
    segments: dict[str, dict[str, float]] = {}
    cold = n_train_events[users] < cfg.cold_threshold
    for seg, mask in (("cold", cold), ("warm", ~cold)):
        seg_metrics = {name: float(v[mask].mean()) if mask.any() else 0.0 for name, v in per_user.items()}
        seg_metrics["n_users"] = float(mask.sum())
        segments[seg] = seg_metrics
    return EvalResult(
        model=artifact.name,
        metrics=metrics,
        segments=segments,
        n_users=int(users.size),
        popularity_deciles=popularity_deciles(recs, pop, 10 if 10 in ks else kmax),
        eval_seconds=time.perf_counter() - t0,
        fit_seconds=artifact.metrics.get("fit_seconds"),
        params=dict(artifact.params),
    )
