"""Popularity, ItemKNN (cosine, BM25) and EASE: the models whose artifact is item scores.

They score a user as a (recency-)weighted sum of the item-item rows of their history; popularity
scores everyone the same (time-decayed counts).
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from recmesh.core.artifacts import ModelArtifact

from ..dataset import Dataset
from .base import ModelConfig, ModelError, build_artifact, limit_blas_threads, register


# --------------------------------------------------------------------------- popularity
class PopularityConfig(ModelConfig):
    """Most popular items, counted over distinct users, optionally time-decayed."""

    popularity_half_life_days: float | None = Field(
        None, gt=0, description="Half-life (days) of the popularity counts (None = plain counts)."
    )


@register("popularity", PopularityConfig, "Most popular items (optionally time-decayed).", baseline=False)
def fit_popularity(dataset: Dataset, config: PopularityConfig) -> ModelArtifact:
    return build_artifact("popularity", "popularity", dataset, config, {"type": "popularity"})


# --------------------------------------------------------------------------- shared helpers
def _train_matrix(dataset: Dataset, binary: bool) -> sp.csr_matrix:
    return dataset.binary_matrix() if binary else dataset.matrix(positive_only=True)


def _item_item_artifact(
    name: str,
    dataset: Dataset,
    config: ModelConfig,
    sim: np.ndarray | sp.spmatrix,
    neighbors: int,
    dense_max_items: int,
) -> ModelArtifact:
    """Prune each row of ``sim`` to its top ``neighbors`` and store dense or as a neighbor list."""
    n = dataset.n_items
    k = max(1, min(neighbors, n - 1)) if n > 1 else 1
    dense = sim.toarray() if sp.issparse(sim) else np.asarray(sim)
    dense = dense.astype(np.float32, copy=False)
    np.fill_diagonal(dense, 0.0)
    part = np.argpartition(-dense, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (n, 1))
    rows = np.arange(n)[:, None]
    vals = dense[rows, part]
    order = np.lexsort((part, -vals), axis=1)
    part = np.take_along_axis(part, order, axis=1).astype(np.int32)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32)
    keep = vals != 0
    encoder = {"type": "item_item"}
    if n <= dense_max_items:
        pruned = np.zeros((n, n), dtype=np.float32)
        pruned[np.broadcast_to(rows, part.shape)[keep], part[keep]] = vals[keep]
        return build_artifact(name, "item_item", dataset, config, encoder, item_item=pruned)
    part[~keep] = -1
    vals[~keep] = 0.0
    return build_artifact(name, "item_item", dataset, config, encoder, neighbors=part, neighbor_scores=vals)


# --------------------------------------------------------------------------- ItemKNN
class ItemKNNConfig(ModelConfig):
    """Item-based nearest neighbours over the user×item matrix."""

    similarity: Literal["cosine", "bm25"] = Field("cosine", description="Item-item similarity measure.")
    neighbors: int = Field(100, ge=1, description="Neighbours kept per item.")
    shrink: float = Field(0.0, ge=0, description="Shrinkage added to the cosine denominator.")
    bm25_k1: float = Field(1.2, gt=0, description="BM25 term-frequency saturation K1.")
    bm25_b: float = Field(0.75, ge=0, le=1, description="BM25 length normalisation B.")
    binary: bool = Field(True, description="Use 1/0 interactions instead of the weighted matrix.")
    dense_max_items: int = Field(
        8000, ge=1, description="Store a dense item-item matrix up to this catalog size, else top-N lists."
    )


def _bm25_weight(x: sp.csr_matrix, k1: float, b: float) -> sp.csr_matrix:
    """BM25-weight rows of ``x`` (documents) over columns (terms), as implicit's ``bm25_weight``."""
    x = sp.coo_matrix(x, dtype=np.float64)
    n_docs = x.shape[0]
    df = np.bincount(x.col, minlength=x.shape[1])
    idf = np.log(n_docs) - np.log1p(df)
    row_sums = np.ravel(x.sum(axis=1))
    avg = row_sums.mean() if row_sums.size else 1.0
    length_norm = (1.0 - b) + b * row_sums / max(avg, 1e-12)
    data = x.data * (k1 + 1.0) / (k1 * length_norm[x.row] + x.data) * idf[x.col]
    return sp.csr_matrix((data, (x.row, x.col)), shape=x.shape)


@register("itemknn", ItemKNNConfig, "Item-based kNN with cosine or BM25 similarity.", baseline=True)
def fit_itemknn(dataset: Dataset, config: ItemKNNConfig) -> ModelArtifact:
    x = _train_matrix(dataset, config.binary).astype(np.float64)
    if config.similarity == "cosine":
        gram = (x.T @ x).toarray()
        norms = np.sqrt(np.diag(gram))
        sim = gram / (np.outer(norms, norms) + config.shrink + 1e-12)
    else:
        # items are the documents, users the terms: co-occurrence discounted by user activity
        weighted = _bm25_weight(x.T.tocsr(), config.bm25_k1, config.bm25_b)
        sim = (weighted @ x).toarray()
    return _item_item_artifact("itemknn", dataset, config, sim, config.neighbors, config.dense_max_items)


# --------------------------------------------------------------------------- EASE
def os_threads() -> int:
    """All cores: the dense inverse is one big BLAS call, unlike implicit's own parallel loops."""
    return max(1, os.cpu_count() or 1)


class EASEConfig(ModelConfig):
    """Embarrassingly Shallow Autoencoder (Steck 2019): closed-form item-item regression."""

    l2: float = Field(500.0, gt=0, description="L2 regularisation λ added to the Gram diagonal.")
    binary: bool = Field(True, description="Use 1/0 interactions instead of the weighted matrix.")
    max_items: int = Field(50_000, ge=1, description="Refuse catalogs larger than this (dense n² inverse).")
    neighbors: int | None = Field(
        None, ge=1, description="Keep only the top-N weights per item (None = keep the dense matrix)."
    )


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """B = I - P·diag(1/diag(P)) with P = (XᵀX + λI)⁻¹, zero diagonal."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    with limit_blas_threads(os_threads()):
        p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


@register("ease", EASEConfig, "EASE closed-form item-item model (catalogs up to ~50k items).", baseline=True)
def fit_ease(dataset: Dataset, config: EASEConfig) -> ModelArtifact:
    if dataset.n_items > config.max_items:
        raise ModelError(f"ease: {dataset.n_items} items exceed max_items={config.max_items}")
    b = ease_weights(_train_matrix(dataset, config.binary), config.l2)
    if config.neighbors is not None:
        return _item_item_artifact("ease", dataset, config, b, config.neighbors, config.max_items)
    return build_artifact("ease", "item_item", dataset, config, {"type": "item_item"}, item_item=b)
