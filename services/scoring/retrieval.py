"""Nearest-item retrieval over a model's item vectors: exact numpy top-k or HNSW (hnswlib).

Scores are inner products (what factor models are trained for). Small catalogs use one
matrix-vector product and ``np.argpartition``; catalogs at or above the configured threshold
use an HNSW graph in inner-product space, whose recall against the exact search is checked in
``tests/unit/scoring``. Every index also keeps L2-normalised vectors for item-to-item cosine
similarity and diversity (MMR), computed once at load time, never per request.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]
_EMPTY_I = np.zeros(0, dtype=np.int64)
_EMPTY_F = np.zeros(0, dtype=np.float32)


def normalise_rows(x: NDArray[Any]) -> FloatArray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def top_k_scores(scores: NDArray[Any], k: int) -> tuple[IntArray, FloatArray]:
    """Indices and values of the k highest scores, best first (ties by index)."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return _EMPTY_I, _EMPTY_F
    part = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
    order = part[np.lexsort((part, -scores[part]))]
    return order.astype(np.int64), scores[order].astype(np.float32)


class ExactIndex:
    """Brute-force inner-product search (one GEMV + argpartition)."""

    kind = "exact"

    def __init__(self, vectors: NDArray[Any]) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.n, self.dim = self.vectors.shape

    def search(self, query: NDArray[Any], k: int) -> tuple[IntArray, FloatArray]:
        return top_k_scores(self.vectors @ np.asarray(query, dtype=np.float32), k)

    def search_subset(self, query: NDArray[Any], subset: IntArray, k: int) -> tuple[IntArray, FloatArray]:
        """Exact top-k among ``subset`` indices only (category filters, include lists)."""
        if subset.size == 0:
            return _EMPTY_I, _EMPTY_F
        scores = self.vectors[subset] @ np.asarray(query, dtype=np.float32)
        idx, sc = top_k_scores(scores, k)
        return subset[idx], sc


class HnswIndex(ExactIndex):
    """Approximate inner-product search with an HNSW graph; exact search on subsets."""

    kind = "hnsw"

    def __init__(
        self,
        vectors: NDArray[Any],
        m: int = 16,
        ef_construction: int = 100,
        ef: int = 96,
        threads: int | None = None,
        seed: int = 42,
    ) -> None:
        import hnswlib

        super().__init__(vectors)
        self.ef = ef
        self.index = hnswlib.Index(space="ip", dim=self.dim)
        self.index.init_index(max_elements=max(self.n, 1), ef_construction=ef_construction, M=m,
                              random_seed=seed)  # fmt: skip
        if self.n:
            self.index.add_items(self.vectors, np.arange(self.n), num_threads=threads or os.cpu_count() or 1)
        self.index.set_ef(ef)
        self.index.set_num_threads(1)  # queries run on the event loop: one thread each, no pool

    def search(self, query: NDArray[Any], k: int) -> tuple[IntArray, FloatArray]:
        k = min(k, self.n)
        if k <= 0:
            return _EMPTY_I, _EMPTY_F
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if k > self.ef:  # hnswlib needs ef >= k; rare (candidate counts stay below ef by default)
            self.index.set_ef(k)
            labels, dist = self.index.knn_query(q, k=k)
            self.index.set_ef(self.ef)
        else:
            labels, dist = self.index.knn_query(q, k=k)
        # hnswlib's "ip" distance is 1 - <q, x>
        return labels[0].astype(np.int64), (1.0 - dist[0]).astype(np.float32)


def build_index(
    vectors: NDArray[Any],
    threshold: int,
    m: int = 16,
    ef_construction: int = 100,
    ef: int = 96,
    threads: int | None = None,
) -> ExactIndex:
    """Exact below ``threshold`` items, HNSW at or above it."""
    if vectors.shape[0] >= threshold:
        return HnswIndex(vectors, m=m, ef_construction=ef_construction, ef=ef, threads=threads)
    return ExactIndex(vectors)


def recall_at_k(approx: NDArray[Any], exact: NDArray[Any]) -> float:
    """Mean fraction of the exact top-k found by the approximate search (rows = queries)."""
    hits = [len(set(a.tolist()) & set(e.tolist())) / max(len(e), 1) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) if hits else 1.0
