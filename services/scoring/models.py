"""The model holder: which model versions this replica serves, loaded and swapped atomically.

At start the champion of each served model name (and every version an experiment variant
pins) is read from the registry and loaded with its retrieval index. Afterwards a consumer
of ``models.published.v1`` with a group id of its own (every replica must see every
publish; it starts from the latest offset, since the registry was just read) loads each new
version in that background thread — artifact, normalised vectors, HNSW graph — and only
then swaps it in with ONE reference assignment of a fresh dict. A request holds the
:class:`ServedModel` it started with, so an in-flight request never sees a half-swapped model.
Versions pinned by variants stay loaded whatever the champion is.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from recmesh.core.artifacts import ModelArtifact
from recmesh.core.bus import Record
from recmesh.core.events import ModelPublished
from recmesh.core.registry import Registry
from recmesh.scoring import metrics as sm
from recmesh.scoring.retrieval import ExactIndex, FloatArray, IntArray, build_index, normalise_rows, top_k_scores
from recmesh.scoring.settings import ScoringSection

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ServedModel:
    """One loaded model version with everything the request path needs precomputed."""

    name: str
    version: str
    artifact: ModelArtifact
    index: ExactIndex | None
    normed: FloatArray | None  # unit item vectors (cosine similarity, MMR)
    popular_idx: IntArray  # item indices by artifact popularity, best first
    popular_ids: list[str] = field(default_factory=list)  # the same as ids (the fallback list)
    loaded_at: float = field(default_factory=time.time)
    _cache: dict[Any, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.artifact.kind

    @property
    def item_ids(self) -> list[str]:
        return self.artifact.item_ids

    @property
    def item_index(self) -> dict[str, int]:
        return self.artifact.item_index

    @property
    def dim(self) -> int:
        return self.artifact.dim

    def cached(self, key: Any, build: Any) -> Any:
        """Per-model memo for derived data (e.g. a category's item indices per catalog version)."""
        try:
            return self._cache[key]
        except KeyError:
            if len(self._cache) > 4096:
                self._cache.clear()
            val = self._cache[key] = build()
            return val

    def cached_while(self, key: Any, token: Any, build: Any) -> Any:
        """Like :meth:`cached`, but rebuilt once ``token`` is no longer the same object (e.g. a
        catalog category's member set, replaced whenever the category changes). One entry per key,
        so replaced tokens are not kept alive."""
        hit = self._cache.get(key)
        if hit is not None and hit[0] is token:
            return hit[1]
        if hit is None and len(self._cache) > 4096:
            self._cache.clear()
        val = build()
        self._cache[key] = (token, val)
        return val

    def embeddings(self, item_ids: list[str]) -> NDArray[np.float32]:
        """Unit vectors of items (zero rows for items the model does not know)."""
        if self.normed is None:
            return np.zeros((len(item_ids), 1), dtype=np.float32)
        idx = [self.item_index.get(i, -1) for i in item_ids]
        out = np.zeros((len(item_ids), self.normed.shape[1]), dtype=np.float32)
        for row, j in enumerate(idx):
            if j >= 0:
                out[row] = self.normed[j]
        return out

    def similar(self, idx: int, n: int) -> tuple[IntArray, FloatArray]:
        """Items most similar to item ``idx`` (cosine for vectors; the item-item row otherwise)."""
        a = self.artifact
        if self.kind == "vectors" and self.normed is not None and self.index is not None:
            if self.index.kind == "hnsw":
                # HNSW is in inner-product space: over-fetch, then re-rank by cosine
                cand, _ = self.index.search(self.normed[idx], min(self.index.n, max(4 * n, 50)))
                scores = self.normed[cand] @ self.normed[idx]
                order, sc = top_k_scores(scores, n + 1)
                ids, scs = cand[order], sc
            else:
                ids, scs = top_k_scores(self.normed @ self.normed[idx], n + 1)
        elif a.item_item is not None:
            ids, scs = top_k_scores(a.item_item[idx], n + 1)
        elif a.neighbors is not None and a.neighbor_scores is not None:
            nb, sc = a.neighbors[idx], a.neighbor_scores[idx]
            ok = nb >= 0
            ids, scs = nb[ok].astype(np.int64), sc[ok].astype(np.float32)
        else:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        keep = ids != idx
        return ids[keep][:n], scs[keep][:n]


def prepare_model(
    name: str, version: str, art: ModelArtifact, section: ScoringSection, threads: int | None = None
) -> ServedModel:
    """Precompute what requests need (index, unit vectors, id maps, popularity order)."""
    index = normed = None
    if art.kind == "vectors" and art.item_vectors is not None:
        index = build_index(
            art.item_vectors,
            section.hnsw_threshold,
            m=section.hnsw_m,
            ef_construction=section.hnsw_ef_construction,
            ef=section.hnsw_ef,
            threads=threads,
        )
        normed = normalise_rows(art.item_vectors)
    _ = art.item_index, art.user_index  # build the id maps now, not on the first request
    popular_idx = np.argsort(-art.popularity, kind="stable")[:10_000].astype(np.int64)
    popular_ids = [art.item_ids[i] for i in popular_idx[:1000].tolist()]
    return ServedModel(name, version, art, index, normed, popular_idx, popular_ids)


def load_model(name: str, version: str, uri: str, section: ScoringSection, threads: int | None) -> ServedModel:
    """Load an artifact and build its index (the slow part happens here, before any swap)."""
    t0 = time.perf_counter()
    model = prepare_model(name, version, ModelArtifact.load(uri), section, threads)
    dt = time.perf_counter() - t0
    sm.MODEL_LOAD_SECONDS.labels(name).observe(dt)
    log.info(
        "model loaded",
        extra={"model": name, "version": version, "kind": model.kind, "items": model.artifact.n_items,
               "index": model.index.kind if model.index else None, "seconds": round(dt, 2)},
    )  # fmt: skip
    return model


class ModelHolder:
    """Champion per model name + versions pinned by experiment variants."""

    def __init__(self, registry: Registry, section: ScoringSection) -> None:
        self.registry = registry
        self.section = section
        self.names = list(section.models)
        self.champions: dict[str, ServedModel] = {}
        self.pinned: dict[tuple[str, str], ServedModel] = {}
        self._lock = threading.Lock()  # serialises loads (consumer thread, registry poll), not reads

    # -- reading (request path: plain dict reads of the current references) ---------------------
    def get(self, name: str, version: str | None = None) -> ServedModel | None:
        if version is not None:
            pinned = self.pinned.get((name, version))
            if pinned is not None:
                return pinned
            champ = self.champions.get(name)
            return champ if champ is not None and champ.version == version else None
        return self.champions.get(name)

    @property
    def ready(self) -> bool:
        return bool(self.champions) or bool(self.pinned)

    def versions(self) -> dict[str, str]:
        return {n: m.version for n, m in self.champions.items()}

    # -- loading -----------------------------------------------------------------------------
    def _pins(self) -> set[tuple[str, str]]:
        return {
            (v.model or self.names[0], v.version)
            for v in self.section.experiment.variants.values()
            if v.version is not None
        }

    def _swap(self, model: ServedModel) -> None:
        old = self.champions.get(model.name)
        self.champions = {**self.champions, model.name: model}  # the one atomic reference swap
        if old is not None and old.version != model.version:
            sm.MODEL_VERSION.labels(model.name, old.version).set(0)
            sm.MODEL_VERSION.remove(model.name, old.version)
        sm.MODEL_VERSION.labels(model.name, model.version).set(1)
        sm.MODEL_LOADED_AT.labels(model.name).set(model.loaded_at)
        sm.MODEL_SWAPS.labels(model.name).inc()
        log.info(
            "model swapped",
            extra={"model": model.name, "version": model.version, "previous": old.version if old else None},
        )

    def install(self, model: ServedModel) -> None:
        """Serve an already prepared model as its name's champion (tests, embedding)."""
        with self._lock:
            self._swap(model)

    def _load_version(self, name: str, version: str, uri: str | None, threads: int | None) -> ServedModel | None:
        try:
            return load_model(name, version, uri or self.registry.version_uri(name, version), self.section, threads)
        except Exception:
            sm.MODEL_LOAD_FAILED.labels(name).inc()
            log.exception("model version failed to load; keeping the current one",
                          extra={"model": name, "version": version})  # fmt: skip
            return None

    def ensure(self, name: str, version: str, uri: str | None = None, first: bool = False) -> bool:
        """Make ``version`` the served champion of ``name`` (load unless already served)."""
        with self._lock:
            cur = self.champions.get(name)
            if cur is not None and cur.version == version:
                return True
            pinned = self.pinned.get((name, version))
            threads = (os.cpu_count() or 1) if first else self.section.hnsw_build_threads
            model = pinned or self._load_version(name, version, uri, threads)
            if model is None:
                return False
            if (name, version) in self._pins() and pinned is None:
                # a pinned version that was not loadable at start: keep it once it is
                self.pinned = {**self.pinned, (name, version): model}
            self._swap(model)
            return True

    def load_initial(self) -> None:
        """Champions and pinned versions from the registry (called once at start, off the loop)."""
        for name, version in sorted(self._pins()):
            with self._lock:
                if (name, version) not in self.pinned and self.registry.get(name, version) is not None:
                    m = self._load_version(name, version, None, os.cpu_count())
                    if m is not None:
                        self.pinned = {**self.pinned, (name, version): m}
        self.refresh_from_registry(first=True)

    def refresh_from_registry(self, first: bool = False) -> None:
        """Serve each name's current registry champion (start, consumer ready, periodic safety net)."""
        for name in self.names:
            try:
                info = self.registry.champion(name)
            except Exception:
                log.exception("registry unreadable", extra={"model": name})
                continue
            if info is not None:
                self.ensure(name, info.version, info.uri or None, first=first)

    def handle_published(self, records: Iterable[Record[ModelPublished]]) -> None:
        """Batch handler for ``models.published.v1``: the latest publish per served name wins."""
        latest: dict[str, ModelPublished] = {}
        for rec in records:
            ev = rec.value
            if ev is not None and ev.name in self.names:
                latest[ev.name] = ev
        for name, ev in latest.items():
            log.info("model published", extra={"model": name, "version": ev.version, "action": ev.action})
            self.ensure(name, ev.version, ev.artifact_uri or None)
