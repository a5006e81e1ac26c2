"""The model artifact format shared by training, scoring and personalization.

An artifact is a directory on any fsspec URI (local path by default, ``s3://`` in production)
holding plain files, so a reader needs only numpy, json and fsspec (no scipy, implicit or torch):

``meta.json``
    model name, kind, params, metrics, dim, created_at (epoch ms), data range, dataset hash,
    code version and ``encoder`` (how a user's history becomes scores, see below).
``item_ids.json``
    item ids as strings, in index order.
``popularity.npy``
    float32 per item: the (time-decayed) popularity used for fallbacks and blends.
kind ``vectors`` (ALS, BPR, deep models)
    ``item_vectors.npy`` float32 ``[n_items, dim]``; optionally ``user_ids.json`` +
    ``user_vectors.npy`` (the model's own user factors, bulk-loaded by personalization).
kind ``item_item`` (EASE, ItemKNN)
    dense ``item_item.npy`` float32 ``[n_items, n_items]`` for small catalogs, or top-N
    ``neighbors.npy`` int32 ``[n_items, N]`` + ``neighbor_scores.npy`` float32 (``-1`` pads).
kind ``popularity``
    nothing else.
``histories.npz`` (optional, any kind)
    the training users' histories (:class:`UserHistories`: ids, CSR item indices, values,
    timestamps; the most recent events per user), written by ``recmesh model fit`` so that
    ``recmesh model recommend`` can score known users and exclude what they saw from the artifact
    alone. Services never read it (:meth:`ModelArtifact.load` skips it unless asked).

The ``encoder`` dictionary describes the user encoder:

* ``type``: ``als_fold_in`` (exact ALS least-squares fold-in, needs ``regularization`` and
  ``alpha``; ``confidence_offset`` 1 and ``reg_per_event`` true for Spark's ALS-WR flavour,
  see :func:`fold_in_als`), ``mean`` (weighted mean of item vectors), ``item_item`` (weighted sum of item-item
  rows), ``popularity`` or ``torch`` (a sequence encoder, see :mod:`recmesh.core.torch_encoder`;
  in a process without torch, e.g. the scoring image, it degrades to the recency-weighted mean);
* ``half_life`` / ``half_life_unit`` (``events`` or ``ms``) / ``recency_floor``: recency weighting
  of the history (see :func:`recency_weights`);
* ``popularity_blend``: weight of the max-normalised popularity added to every score.

Writers may put extra keys into ``meta.json`` (``extra``); they are kept on load.
"""

from __future__ import annotations

import io
import json
import logging
import posixpath
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import fsspec
import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)
_torch_warned = False  # the "no torch, mean fallback" warning is logged once per process

FORMAT_VERSION = 1
Kind = Literal["vectors", "item_item", "popularity"]
KINDS: tuple[str, ...] = ("vectors", "item_item", "popularity")
ENCODERS: tuple[str, ...] = ("als_fold_in", "mean", "item_item", "popularity", "torch")

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]

_META_KEYS = {
    "format_version",
    "name",
    "kind",
    "params",
    "metrics",
    "dim",
    "n_items",
    "created_at",
    "data_range",
    "dataset_hash",
    "code_version",
    "encoder",
    "has_user_vectors",
    "item_item_format",
    "blobs",
}


class ArtifactError(ValueError):
    """An artifact is missing, incomplete or inconsistent."""


HISTORIES_FILE = "histories.npz"


@dataclass
class UserHistories:
    """Training histories of users, oldest → newest, as CSR arrays over the artifact's item indices."""

    user_ids: list[str]
    indptr: IntArray  # [n_users + 1]
    items: NDArray[np.int32]
    values: FloatArray
    timestamps: IntArray  # epoch ms

    def __post_init__(self) -> None:
        n = len(self.user_ids)
        if self.indptr.shape != (n + 1,) or not (len(self.items) == len(self.values) == len(self.timestamps)):
            raise ArtifactError("histories: indptr must be [n_users + 1] and items/values/timestamps alike")
        self._index = {u: i for i, u in enumerate(self.user_ids)}

    @classmethod
    def from_lists(
        cls, per_user: Sequence[tuple[str, NDArray[Any], NDArray[Any], NDArray[Any]]], max_per_user: int = 200
    ) -> UserHistories:
        """From (user id, item indices, values, timestamps) oldest → newest; keeps the newest ``max_per_user``."""
        kept = [(u, i[-max_per_user:], v[-max_per_user:], t[-max_per_user:]) for u, i, v, t in per_user]
        lengths = np.array([len(i) for _, i, _, _ in kept], dtype=np.int64)
        indptr = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])

        def cat(j: int, dtype: Any) -> Any:
            parts = [np.asarray(row[j], dtype=dtype) for row in kept]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        return cls([str(u) for u, *_ in kept], indptr, cat(1, np.int32), cat(2, np.float32), cat(3, np.int64))

    def get(self, user_id: str) -> tuple[IntArray, FloatArray, IntArray] | None:
        """(item indices, values, timestamps) of a known user, else None."""
        i = self._index.get(user_id)
        if i is None:
            return None
        lo, hi = int(self.indptr[i]), int(self.indptr[i + 1])
        return self.items[lo:hi].astype(np.int64), self.values[lo:hi], self.timestamps[lo:hi]

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, user_ids=np.asarray(self.user_ids, dtype=str), indptr=self.indptr, items=self.items,
                 values=self.values, timestamps=self.timestamps)  # fmt: skip
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> UserHistories:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls([str(u) for u in z["user_ids"]], z["indptr"], z["items"], z["values"], z["timestamps"])


def recency_weights(
    times: Sequence[float] | NDArray[Any],
    half_life: float | None,
    now: float | None = None,
    floor: float = 0.0,
) -> FloatArray:
    """Exponential recency weights ``floor + (1 - floor) · 0.5 ** ((now - t) / half_life)``.

    ``times`` are timestamps (ms) or positions (0 = oldest event) in the same unit as
    ``half_life``; ``now`` defaults to the latest time, so the newest event weighs 1.
    ``half_life`` None or <= 0 means no decay (all ones). ``floor`` keeps a share of the long-term
    profile: old events never weigh less than it.
    """
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0 or half_life is None or half_life <= 0:
        return np.ones(t.shape, dtype=np.float32)
    ref = float(t.max()) if now is None else float(now)
    age = np.maximum(ref - t, 0.0)
    decay = np.power(0.5, age / float(half_life))
    return cast(FloatArray, (floor + (1.0 - floor) * decay).astype(np.float32))


def fold_in_als(
    item_factors: NDArray[np.floating[Any]],
    item_idx: Sequence[int] | NDArray[np.integer[Any]],
    confidences: Sequence[float] | NDArray[np.floating[Any]],
    regularization: float,
    alpha: float = 1.0,
    yty: NDArray[np.floating[Any]] | None = None,
    confidence_offset: float = 0.0,
    reg_per_event: bool = False,
    prior: NDArray[np.floating[Any]] | None = None,
) -> FloatArray:
    """The user vector implicit's ``AlternatingLeastSquares.recalculate_user`` computes.

    Solves ``(YᵀY + λI + Σᵢ (cᵢ - 1) yᵢyᵢᵀ) x = Σ_{cᵢ>0} cᵢ yᵢ`` with ``cᵢ = alpha · confidenceᵢ``
    (a negative confidence only adds ``|cᵢ| - 1`` to the left side, as implicit does).
    Spark's implicit ALS uses ``cᵢ = 1 + alpha · |confidenceᵢ|`` and scales λ by the user's number
    of rated items (ALS-WR): ``confidence_offset=1, reg_per_event=True`` solve exactly that.

    ``prior``: a trained user vector ``x0`` to fold the events onto. The trained history is then
    summarised by a Gaussian prior centred on ``x0`` with precision ``P = YᵀY + λI`` (the part of
    the normal equations shared by every user), and the right side gains ``P·x0``: with no events
    the answer is ``x0``, with ``x0 = 0`` it is the plain fold-in. (λ is not scaled per event here:
    the new events are not the whole history.)
    Only the user's rows of ``Y`` are touched; pass the precomputed ``yty = YᵀY`` (see
    :meth:`ModelArtifact.yty`) so a per-click update costs O(n·d² + d³).
    Repeated item indices are summed, like duplicate entries of a sparse matrix.
    """
    y = np.asarray(item_factors)
    dim = y.shape[1]
    idx = np.asarray(item_idx, dtype=np.int64)
    conf = np.asarray(confidences, dtype=np.float64) * float(alpha)
    if idx.size and np.unique(idx).size != idx.size:
        uniq, inv = np.unique(idx, return_inverse=True)
        conf = np.bincount(inv, weights=conf, minlength=uniq.size).astype(np.float64)
        idx = uniq
    if confidence_offset:
        conf = np.sign(conf) * (float(confidence_offset) + np.abs(conf))
    gram = np.asarray(y.T @ y if yty is None else yty, dtype=np.float64)
    n_reg = max(int(np.count_nonzero(conf)), 1) if reg_per_event and prior is None else 1
    a = gram + float(regularization) * n_reg * np.eye(dim)
    b = np.zeros(dim, dtype=np.float64) if prior is None else a @ np.asarray(prior, dtype=np.float64)
    if idx.size:
        rows = y[idx].astype(np.float64)
        c_abs = np.abs(conf)
        a += (rows * (c_abs - 1.0)[:, None]).T @ rows
        b = rows.T @ np.where(conf > 0, conf, 0.0)
    return cast(FloatArray, np.linalg.solve(a, b).astype(np.float32))


def _fs_and_path(uri: str) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, str(path).rstrip("/")


def _write_bytes(fs: Any, path: str, data: bytes) -> None:
    with fs.open(path, "wb") as fh:
        fh.write(data)


def _npy_bytes(arr: NDArray[Any]) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _read_npy(fs: Any, path: str) -> NDArray[Any]:
    import io

    with fs.open(path, "rb") as fh:
        return cast(NDArray[Any], np.load(io.BytesIO(fh.read()), allow_pickle=False))


def _read_bytes(fs: Any, path: str) -> bytes:
    with fs.open(path, "rb") as fh:
        return bytes(fh.read())


def _read_json(fs: Any, path: str) -> Any:
    with fs.open(path, "rb") as fh:
        return json.loads(fh.read())


@dataclass
class ModelArtifact:
    """A trained model as plain arrays plus the description of its user encoder."""

    name: str
    kind: Kind
    item_ids: list[str]
    popularity: FloatArray
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] = field(default_factory=dict)
    item_vectors: FloatArray | None = None
    user_ids: list[str] | None = None
    user_vectors: FloatArray | None = None
    item_item: FloatArray | None = None
    neighbors: NDArray[np.int32] | None = None
    neighbor_scores: FloatArray | None = None
    created_at: int = field(default_factory=lambda: int(time.time() * 1000))
    data_range: dict[str, Any] = field(default_factory=dict)
    dataset_hash: str = ""
    code_version: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # extra files of the artifact directory (e.g. a torch encoder's ``encoder.pt``), name → bytes
    blobs: dict[str, bytes] = field(default_factory=dict)
    # training histories (``histories.npz``): offline recommend only; loaded on request
    histories: UserHistories | None = None

    def __post_init__(self) -> None:
        self.item_ids = [str(i) for i in self.item_ids]
        self.popularity = np.asarray(self.popularity, dtype=np.float32)
        if self.kind not in KINDS:
            raise ArtifactError(f"unknown artifact kind {self.kind!r} (expected one of {', '.join(KINDS)})")
        n = len(self.item_ids)
        if self.popularity.shape != (n,):
            raise ArtifactError(f"popularity has shape {self.popularity.shape}, expected ({n},)")
        if not self.encoder:
            default_encoder = {"vectors": "mean", "item_item": "item_item"}.get(self.kind, "popularity")
            self.encoder = {"type": default_encoder}
        if self.encoder.get("type") not in ENCODERS:
            raise ArtifactError(f"unknown encoder type {self.encoder.get('type')!r}")
        if self.kind == "vectors":
            if self.item_vectors is None or self.item_vectors.ndim != 2 or self.item_vectors.shape[0] != n:
                raise ArtifactError("a vectors artifact needs item_vectors of shape [n_items, dim]")
            self.item_vectors = np.ascontiguousarray(self.item_vectors, dtype=np.float32)
            if (self.user_ids is None) != (self.user_vectors is None):
                raise ArtifactError("user_ids and user_vectors go together")
            if self.user_vectors is not None and self.user_ids is not None:
                self.user_ids = [str(u) for u in self.user_ids]
                self.user_vectors = np.ascontiguousarray(self.user_vectors, dtype=np.float32)
                if self.user_vectors.shape != (len(self.user_ids), self.item_vectors.shape[1]):
                    raise ArtifactError("user_vectors must be [len(user_ids), dim]")
        if self.kind == "item_item":
            if self.item_item is not None:
                self.item_item = np.ascontiguousarray(self.item_item, dtype=np.float32)
                if self.item_item.shape != (n, n):
                    raise ArtifactError("item_item must be [n_items, n_items]")
            elif self.neighbors is not None and self.neighbor_scores is not None:
                self.neighbors = np.ascontiguousarray(self.neighbors, dtype=np.int32)
                self.neighbor_scores = np.ascontiguousarray(self.neighbor_scores, dtype=np.float32)
                if self.neighbors.shape != self.neighbor_scores.shape or self.neighbors.shape[0] != n:
                    raise ArtifactError("neighbors and neighbor_scores must both be [n_items, N]")
            else:
                raise ArtifactError("an item_item artifact needs item_item or neighbors + neighbor_scores")
        self._item_index: dict[str, int] | None = None
        self._user_index: dict[str, int] | None = None
        self._yty: NDArray[np.float64] | None = None
        self._pop_norm: FloatArray | None = None
        self._torch: Any = None

    # ----------------------------------------------------------------- properties
    @property
    def n_items(self) -> int:
        """Catalog size."""
        return len(self.item_ids)

    @property
    def dim(self) -> int:
        """Vector dimension (0 for non-vector kinds)."""
        return 0 if self.item_vectors is None else int(self.item_vectors.shape[1])

    @property
    def item_index(self) -> dict[str, int]:
        """Item id → row index."""
        if self._item_index is None:
            self._item_index = {item: i for i, item in enumerate(self.item_ids)}
        return self._item_index

    @property
    def user_index(self) -> dict[str, int]:
        """User id → row of ``user_vectors`` (empty without user vectors)."""
        if self._user_index is None:
            self._user_index = {u: i for i, u in enumerate(self.user_ids or [])}
        return self._user_index

    @property
    def half_life(self) -> float | None:
        """Recency half-life of the encoder (None = no decay)."""
        hl = self.encoder.get("half_life")
        return None if hl is None else float(hl)

    def fold_in_params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`fold_in_als` for this artifact's ``als_fold_in`` encoder."""
        e = self.encoder
        return {
            "regularization": float(e.get("regularization", 0.01)),
            "alpha": float(e.get("alpha", 1.0)),
            "confidence_offset": float(e.get("confidence_offset", 0.0)),
            "reg_per_event": bool(e.get("reg_per_event", False)),
        }

    def yty(self) -> NDArray[np.float64]:
        """``YᵀY`` of the item vectors, computed once (for :func:`fold_in_als`)."""
        if self.item_vectors is None:
            raise ArtifactError(f"{self.kind} artifact has no item vectors")
        if self._yty is None:
            y = self.item_vectors.astype(np.float64)
            self._yty = y.T @ y
        return self._yty

    def _popularity_norm(self) -> FloatArray:
        if self._pop_norm is None:
            top = float(self.popularity.max()) if self.popularity.size else 0.0
            self._pop_norm = (self.popularity / top if top > 0 else self.popularity).astype(np.float32)
        return self._pop_norm

    # ----------------------------------------------------------------- encoding
    def history_weights(
        self,
        n: int | None = None,
        timestamps_ms: Sequence[float] | NDArray[Any] | None = None,
        values: Sequence[float] | NDArray[Any] | None = None,
    ) -> FloatArray:
        """Per-event weights for a history ordered oldest → newest: ``values × recency``.

        Recency uses the encoder's half-life, over positions (``half_life_unit = events``)
        or over ``timestamps_ms`` (``ms``).
        """
        if values is not None:
            base = np.asarray(values, dtype=np.float32)
        elif timestamps_ms is not None:
            base = np.ones(len(timestamps_ms), dtype=np.float32)
        elif n is not None:
            base = np.ones(n, dtype=np.float32)
        else:
            raise ValueError("history_weights needs n, timestamps_ms or values")
        if self.encoder.get("type") == "torch":
            # a sequence encoder needs the order: weights are positions (1 = oldest), 0 drops negatives
            return cast(FloatArray, np.where(base > 0, np.arange(1, base.size + 1), 0).astype(np.float32))
        unit = self.encoder.get("half_life_unit", "events")
        floor = float(self.encoder.get("recency_floor", 0.0) or 0.0)
        if unit == "ms" and timestamps_ms is not None:
            times = np.asarray(timestamps_ms, dtype=np.float64)
        else:
            times = np.arange(base.size, dtype=np.float64)
        rec = recency_weights(times, self.half_life, floor=floor)
        return cast(FloatArray, (base * rec).astype(np.float32))

    def user_vector_from_history(
        self,
        item_idx: Sequence[int] | NDArray[np.integer[Any]],
        weights: Sequence[float] | NDArray[np.floating[Any]] | None = None,
    ) -> FloatArray:
        """Encode a history (item indices + weights) into a user vector (vector models only)."""
        if self.item_vectors is None:
            raise ArtifactError(f"{self.kind} artifact has no item vectors")
        idx = np.asarray(item_idx, dtype=np.int64)
        w = np.ones(idx.size, dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        kind = self.encoder.get("type")
        if kind == "torch":
            return self._torch_user_vector(idx, None if weights is None else w)
        if kind == "als_fold_in":
            return fold_in_als(self.item_vectors, idx, w, yty=self.yty(), **self.fold_in_params())
        vec = self._mean_vector(idx, w)
        if self.encoder.get("bias_column"):
            # BPR-style factors carry the item bias in the last column; the user side is a constant 1.
            vec[-1] = 1.0
        return cast(FloatArray, vec.astype(np.float32))

    def _torch_user_vector(self, idx: IntArray, weights: FloatArray | None) -> FloatArray:
        """Sequence-encoder user vector; with weights (positions), order by them and drop zeros."""
        assert self.item_vectors is not None
        if weights is not None:
            keep = weights > 0
            idx = idx[keep][np.argsort(weights[keep], kind="stable")]
        if idx.size == 0:
            return np.zeros(self.dim, dtype=np.float32)
        if self._torch is None:
            from recmesh.core.torch_encoder import ENCODER_FILE, load_encoder  # imports torch lazily

            name = str(self.encoder.get("file", ENCODER_FILE))
            if name not in self.blobs:
                raise ArtifactError(f"torch encoder file {name} missing from the artifact")
            try:
                self._torch = load_encoder(self.blobs[name], self.encoder)
            except ImportError as exc:
                # Scoring has no torch (DESIGN: "scoring needs no PyTorch") yet meets users with recent
                # items but no vector in Redis: serve a cruder vector instead of a 500, and stop trying.
                self._torch = False
                _warn_no_torch(self.name, exc)
        if self._torch is False:
            order = np.arange(1, idx.size + 1, dtype=np.float32)  # newer weighs more, as in the sequence
            return self._mean_vector(idx, order)
        return cast(FloatArray, self._torch.encode(self.item_vectors[idx]))

    def _mean_vector(self, idx: IntArray, weights: FloatArray) -> FloatArray:
        """Weighted mean of the item vectors of ``idx`` (zeros for an empty or all-zero history)."""
        assert self.item_vectors is not None
        if idx.size == 0 or float(np.abs(weights).sum()) == 0.0:
            return np.zeros(self.dim, dtype=np.float32)
        vec = (weights[:, None] * self.item_vectors[idx]).sum(axis=0) / np.float32(np.abs(weights).sum())
        return cast(FloatArray, vec.astype(np.float32))

    def score_history(
        self,
        item_idx: Sequence[int] | NDArray[np.integer[Any]],
        weights: Sequence[float] | NDArray[np.floating[Any]] | None = None,
    ) -> FloatArray:
        """Scores over the whole catalog from a user's history (weights: recency × value).

        An empty history falls back to popularity. Seen items are *not* excluded here.
        """
        idx = np.asarray(item_idx, dtype=np.int64)
        w = np.ones(idx.size, dtype=np.float32) if weights is None else np.asarray(weights, dtype=np.float32)
        if idx.size != w.size:
            raise ValueError("item_idx and weights differ in length")
        if idx.size == 0 or self.kind == "popularity" or self.encoder.get("type") == "popularity":
            return self.popularity.copy()
        if self.kind == "vectors":
            assert self.item_vectors is not None
            scores = self.item_vectors @ self.user_vector_from_history(idx, w)
        elif self.item_item is not None:
            scores = w @ self.item_item[idx]
        else:
            assert self.neighbors is not None and self.neighbor_scores is not None
            nb = self.neighbors[idx]
            sc = self.neighbor_scores[idx] * w[:, None]
            ok = nb >= 0
            scores = np.bincount(nb[ok], weights=sc[ok], minlength=self.n_items).astype(np.float32)
        scores = np.asarray(scores, dtype=np.float32)
        blend = float(self.encoder.get("popularity_blend", 0.0) or 0.0)
        if blend:
            scores = scores + np.float32(blend) * self._popularity_norm()
        return scores

    def score_users(self, weights: Any) -> FloatArray:
        """Batch scoring: ``weights`` is a user×item CSR-like matrix (``indptr``/``indices``/``data``).

        Rows without history get popularity. Used by offline evaluation.
        """
        n_rows = int(weights.shape[0])
        indptr = np.asarray(weights.indptr)
        out = np.empty((n_rows, self.n_items), dtype=np.float32)
        dense_ii = self.item_item is not None and self.encoder.get("type") == "item_item"
        if self.kind == "item_item" and dense_ii:
            dense = np.asarray(weights @ self.item_item, dtype=np.float32)
            blend = float(self.encoder.get("popularity_blend", 0.0) or 0.0)
            if blend:
                dense += np.float32(blend) * self._popularity_norm()[None, :]
            out[:] = dense
            empty = np.diff(indptr) == 0
            if empty.any():
                out[empty] = self.popularity
            return out
        indices = np.asarray(weights.indices)
        data = np.asarray(weights.data)
        if self.kind == "vectors" and self.item_vectors is not None and self.encoder.get("type") != "popularity":
            # one GEMM for the batch instead of a mat-vec per user (same numbers as score_history)
            users = np.zeros((n_rows, self.dim), dtype=np.float32)
            empty = np.diff(indptr) == 0
            for r in np.flatnonzero(~empty):
                lo, hi = int(indptr[r]), int(indptr[r + 1])
                users[r] = self.user_vector_from_history(indices[lo:hi], data[lo:hi])
            np.matmul(users, self.item_vectors.T, out=out)
            blend = float(self.encoder.get("popularity_blend", 0.0) or 0.0)
            if blend:
                out += np.float32(blend) * self._popularity_norm()[None, :]
            if empty.any():
                out[empty] = self.popularity
            return out
        for row in range(n_rows):
            lo, hi = int(indptr[row]), int(indptr[row + 1])
            out[row] = self.score_history(indices[lo:hi], data[lo:hi])
        return out

    def recommend(
        self,
        item_idx: Sequence[int] | NDArray[np.integer[Any]],
        weights: Sequence[float] | NDArray[np.floating[Any]] | None = None,
        k: int = 10,
        exclude: Sequence[int] | NDArray[np.integer[Any]] | None = None,
    ) -> tuple[IntArray, FloatArray]:
        """Top-k item indices and scores for a history, optionally excluding some indices."""
        scores = self.score_history(item_idx, weights).astype(np.float64)
        if exclude is not None and len(exclude):
            scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        top = np.argpartition(-scores, k - 1)[:k]
        # stable tie-break on index keeps recommendations deterministic
        top = top[np.lexsort((top, -scores[top]))]
        return top.astype(np.int64), scores[top].astype(np.float32)

    # ----------------------------------------------------------------- persistence
    def meta(self) -> dict[str, Any]:
        """The ``meta.json`` document."""
        doc: dict[str, Any] = dict(self.extra)
        doc.update(
            {
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "kind": self.kind,
                "params": self.params,
                "metrics": self.metrics,
                "dim": self.dim,
                "n_items": self.n_items,
                "created_at": int(self.created_at),
                "data_range": self.data_range,
                "dataset_hash": self.dataset_hash,
                "code_version": self.code_version,
                "encoder": self.encoder,
                "has_user_vectors": self.user_vectors is not None,
                "item_item_format": self._item_item_format(),
                "blobs": sorted(self.blobs),
            }
        )
        return doc

    def _item_item_format(self) -> str | None:
        if self.kind != "item_item":
            return None
        return "dense" if self.item_item is not None else "neighbors"

    def save(self, uri: str) -> str:
        """Write the artifact to ``uri`` atomically (temp directory, then rename) and return ``uri``.

        Refuses to overwrite an existing non-empty directory.
        """
        fs, path = _fs_and_path(uri)
        if fs.exists(path) and (not fs.isdir(path) or fs.ls(path)):
            raise ArtifactError(f"refusing to overwrite existing {uri}")
        parent = posixpath.dirname(path) or "."
        tmp = posixpath.join(parent, f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
        fs.makedirs(tmp, exist_ok=True)
        try:
            files: dict[str, bytes] = {
                "item_ids.json": json.dumps(self.item_ids).encode(),
                "popularity.npy": _npy_bytes(self.popularity),
            }
            if self.item_vectors is not None:
                files["item_vectors.npy"] = _npy_bytes(self.item_vectors)
            if self.user_vectors is not None and self.user_ids is not None:
                files["user_ids.json"] = json.dumps(self.user_ids).encode()
                files["user_vectors.npy"] = _npy_bytes(self.user_vectors)
            if self.item_item is not None:
                files["item_item.npy"] = _npy_bytes(self.item_item)
            if self.neighbors is not None and self.neighbor_scores is not None:
                files["neighbors.npy"] = _npy_bytes(self.neighbors)
                files["neighbor_scores.npy"] = _npy_bytes(self.neighbor_scores)
            for blob_name, blob in self.blobs.items():
                files[blob_name] = blob
            if self.histories is not None:
                files[HISTORIES_FILE] = self.histories.to_bytes()
            # meta.json last: a reader that sees it sees a complete artifact
            meta = json.dumps(self.meta(), indent=2, sort_keys=True, default=_json_default)
            files["meta.json"] = meta.encode()
            for name, data in files.items():
                _write_bytes(fs, posixpath.join(tmp, name), data)
            if fs.exists(path):
                fs.rmdir(path)
            fs.mv(tmp, path, recursive=True)
        except BaseException:
            if fs.exists(tmp):
                fs.rm(tmp, recursive=True)
            raise
        return uri

    @classmethod
    def load(cls, uri: str, histories: bool = False) -> ModelArtifact:
        """Read an artifact written by :meth:`save` (``histories``: also its training histories, if any)."""
        fs, path = _fs_and_path(uri)
        meta_path = posixpath.join(path, "meta.json")
        if not fs.exists(meta_path):
            raise ArtifactError(f"no model artifact at {uri} (meta.json missing)")
        meta = _read_json(fs, meta_path)
        if not isinstance(meta, dict):
            raise ArtifactError(f"{meta_path} is not a JSON object")

        def opt(name: str) -> NDArray[Any] | None:
            p = posixpath.join(path, name)
            return _read_npy(fs, p) if fs.exists(p) else None

        user_ids_path = posixpath.join(path, "user_ids.json")
        hist_path = posixpath.join(path, HISTORIES_FILE)
        try:
            return cls(
                name=str(meta["name"]),
                kind=meta["kind"],
                item_ids=list(_read_json(fs, posixpath.join(path, "item_ids.json"))),
                popularity=_read_npy(fs, posixpath.join(path, "popularity.npy")),
                params=dict(meta.get("params") or {}),
                metrics=dict(meta.get("metrics") or {}),
                encoder=dict(meta.get("encoder") or {}),
                item_vectors=opt("item_vectors.npy"),
                user_ids=list(_read_json(fs, user_ids_path)) if fs.exists(user_ids_path) else None,
                user_vectors=opt("user_vectors.npy"),
                item_item=opt("item_item.npy"),
                neighbors=opt("neighbors.npy"),
                neighbor_scores=opt("neighbor_scores.npy"),
                created_at=int(meta.get("created_at", 0)),
                data_range=dict(meta.get("data_range") or {}),
                dataset_hash=str(meta.get("dataset_hash", "")),
                code_version=str(meta.get("code_version", "")),
                extra={k: v for k, v in meta.items() if k not in _META_KEYS},
                blobs={b: _read_bytes(fs, posixpath.join(path, b)) for b in meta.get("blobs") or []},
                histories=UserHistories.from_bytes(_read_bytes(fs, hist_path))
                if histories and fs.exists(hist_path)
                else None,
            )
        except (KeyError, FileNotFoundError) as exc:
            raise ArtifactError(f"incomplete artifact at {uri}: {exc}") from exc


def _warn_no_torch(model: str, exc: ImportError) -> None:
    global _torch_warned
    if not _torch_warned:
        _torch_warned = True
        log.warning(
            "torch is not installed: sequence-encoder models fall back to the mean of recent item vectors",
            extra={"model": model, "error": repr(exc)},
        )


def _json_default(obj: object) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def top_k(scores: NDArray[Any], k: int) -> IntArray:
    """Indices of the k highest scores, best first (ties by index)."""
    k = min(k, scores.shape[-1])
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return cast(IntArray, part[np.lexsort((part, -scores[part]))].astype(np.int64))


__all__: list[str] = [
    "ArtifactError",
    "ModelArtifact",
    "fold_in_als",
    "recency_weights",
    "top_k",
]
