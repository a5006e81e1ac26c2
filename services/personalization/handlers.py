"""Real-time user state: recent items, category affinities and a user vector per live model version.

Pure parts (testable without I/O): :func:`event_weight`, :func:`fold_in_with_prior`,
:func:`encode_user` and :func:`plan_user` turn a user's history into what must be written.
:class:`PersonalizationHandler` does the Redis I/O around them for one polled batch:

1. drop events already processed (``Deduper``; consumer ``personalization``);
2. group the rest per (tenant, actor) — an anonymous event's actor is its session
   (:func:`recmesh.core.realtime.actor_id`) — so a user with many events in one poll costs one
   read, one fold-in per model and one write;
3. one pipelined read of every touched user's recent list and affinity hash (plus the
   categories of items the catalog index has not seen);
4. compute the new recent list, affinities (log-space decayed, see ``recmesh.core.realtime``)
   and user vectors; write them and the event-id markers in one MULTI/EXEC
   (:meth:`Deduper.apply`), so a crash or a replay never applies an event twice.

User vectors (``Keys.user_vector(user, model, version)``, float32 bytes) are computed for every
live version of every followed model with item vectors:

* encoder ``als_fold_in`` — the exact least-squares fold-in of implicit's
  ``recalculate_user`` over the user's recent history (:func:`recmesh.core.artifacts.fold_in_als`).
  For a user the model was trained on, the new events (newer than the training data) are
  folded on top of the trained vector instead (:func:`fold_in_with_prior`), so one click does
  not replace a long history by a short one;
* encoder ``torch`` — the PyTorch sequence encoder (``recmesh.core.torch_encoder``, reached
  through ``ModelArtifact.user_vector_from_history``; torch imported lazily) over the recent
  items, oldest → newest; when torch is not installed, the weighted mean of item vectors;
* any other vector encoder (``mean``) — the recency-weighted mean of item vectors.

Of the ``models.published.v1`` records in a batch only the newest per model name counts, and
only when it is the registry's current champion: the control consumer re-reads the retained
history at every start, and superseded versions must not be loaded, backfilled or made live.
A new model version is bulk-loaded (its own user vectors, pipelined in chunks) before it goes
live; users it does not know get a vector on their next event, or from the background backfill
over the recent-items keys (``SET NX``, never clobbering a fresher fold-in). Old versions are
no longer written and expire by TTL.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recmesh.core.artifacts import ModelArtifact, fold_in_als
from recmesh.core.bus import Record
from recmesh.core.errors import TransientError
from recmesh.core.events import Interaction, ItemUpdate, ModelPublished, now_ms
from recmesh.core.metrics import Counter, Gauge, Histogram
from recmesh.core.realtime import actor_id, log_weight, logaddexp, parse_categories, parse_recent, recent_entry
from recmesh.core.registry import Registry
from recmesh.core.settings import RedisSettings
from recmesh.core.store import Deduper, Keys
from recmesh.core.topics import parse_catalog_key
from recmesh.personalization.settings import PersonalizationSection

log = logging.getLogger(__name__)
CONSUMER = "personalization"

EVENTS = Counter("recmesh_personalization_events_total", "Interactions applied, by type.", ["event_type"])
DUPLICATES = Counter("recmesh_personalization_duplicates_total", "Interactions skipped as already applied.")
VECTORS = Counter("recmesh_personalization_vectors_total", "User vectors written.", ["model", "how"])
FOLD_SECONDS = Histogram(
    "recmesh_personalization_encode_seconds", "Time to encode one user for one model.", ["model"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)  # fmt: skip
STATE_LAG = Histogram(
    "recmesh_personalization_state_lag_seconds", "Event timestamp → user state written.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)  # fmt: skip
LIVE = Gauge("recmesh_personalization_live_model", "1 for each live model version.", ["model", "version"])
BULK_LOADED = Counter("recmesh_personalization_bulk_loaded_total", "User vectors bulk-loaded.", ["model"])
SKIPPED_PUBLISHES = Counter(
    "recmesh_personalization_skipped_publishes_total", "Published versions not activated (superseded).", ["model"]
)


class _Raced(TransientError):
    """Another consumer applied some of these events meanwhile: recompute the batch."""


# ------------------------------------------------------------------------------- pure logic
def event_weight(event_type: str, value: float | None, weights: dict[str, float], default: float) -> float:
    """Confidence of one event (mirrors training's weights; a rating counts as binary)."""
    return float(weights.get(event_type, default))


def fold_in_with_prior(
    artifact: ModelArtifact,
    prior: np.ndarray,
    item_idx: Sequence[int] | np.ndarray,
    confidences: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Fold new events on top of a trained user vector ``prior`` (see :func:`fold_in_als`'s ``prior``):
    with no new events it is the prior; for a user with no trained vector (zeros) it is exactly the
    plain fold-in."""
    assert artifact.item_vectors is not None
    if len(item_idx) == 0:
        return np.asarray(prior, dtype=np.float32)
    return fold_in_als(artifact.item_vectors, item_idx, confidences, yty=artifact.yty(), prior=prior,
                       **artifact.fold_in_params())  # fmt: skip


@dataclass
class LiveModel:
    """One live model version: its artifact and how to encode a user for it."""

    name: str
    version: str
    artifact: ModelArtifact
    uri: str = ""
    trained_until_ms: int | None = None
    torch_missing: bool = False

    @property
    def has_vectors(self) -> bool:
        return self.artifact.kind == "vectors" and self.artifact.item_vectors is not None


def load_live_model(name: str, version: str, uri: str) -> LiveModel:
    """Load an artifact; a ``torch`` encoder falls back to the mean encoder when torch is missing."""
    art = ModelArtifact.load(uri)
    lm = LiveModel(name=name, version=version, artifact=art, uri=uri)
    until = (art.data_range or {}).get("max_timestamp")
    lm.trained_until_ms = int(until) if until else None
    if art.encoder.get("type") == "torch" and importlib.util.find_spec("torch") is None:
        lm.torch_missing = True
        log.warning("torch is not installed: %s uses the mean of item vectors", name)
    return lm


def encode_user(
    lm: LiveModel,
    history: Sequence[dict[str, Any]],
    user_id: str,
    section: PersonalizationSection,
) -> np.ndarray | None:
    """The user vector for ``lm`` from a history ordered oldest → newest (None: nothing to encode)."""
    if not lm.has_vectors:
        return None
    art = lm.artifact
    index = art.item_index
    idx: list[int] = []
    ts: list[int] = []
    base: list[float] = []
    for h in history:
        i = index.get(str(h["item"]))
        if i is None:
            continue
        idx.append(i)
        ts.append(int(h.get("ts", 0)))
        base.append(event_weight(str(h.get("type", "view")), None, section.event_weights, section.default_weight))
    known = art.user_index.get(user_id) if art.user_vectors is not None else None
    prior = art.user_vectors[known] if known is not None and art.user_vectors is not None else None
    if not idx:
        return None if prior is None else np.asarray(prior, dtype=np.float32)
    weights = art.history_weights(timestamps_ms=ts, values=base)
    enc = art.encoder.get("type")
    if enc == "torch" and not lm.torch_missing:
        # the sequence encoder wants the order of events, not weights: drop negative feedback, keep time order
        seq = [i for i, b in zip(idx, base, strict=True) if b > 0]
        return np.asarray(art.user_vector_from_history(seq, None), dtype=np.float32)
    if enc == "torch":
        assert art.item_vectors is not None
        w = np.abs(weights)
        return (weights[:, None] * art.item_vectors[idx]).sum(axis=0) / np.float32(max(float(w.sum()), 1e-9))
    if enc == "als_fold_in" and prior is not None and section.fold_in_prior:
        cut = lm.trained_until_ms
        new = [k for k, t in enumerate(ts) if cut is None or t > cut]
        return fold_in_with_prior(art, prior, [idx[k] for k in new], weights[new])
    if enc == "als_fold_in":
        return fold_in_als(art.item_vectors, idx, weights, yty=art.yty(), **art.fold_in_params())  # type: ignore[arg-type]
    return art.user_vector_from_history(idx, weights)


@dataclass
class UserPlan:
    """What one user's events change: new list entries, affinity values, vectors per model."""

    tenant: str
    user: str
    push: list[bytes] = field(default_factory=list)  # oldest first (LPUSH puts the last at the head)
    affinity: dict[str, float] = field(default_factory=dict)
    drop_categories: list[str] = field(default_factory=list)
    vectors: list[tuple[LiveModel, np.ndarray]] = field(default_factory=list)
    newest_ts: int = 0


def plan_user(
    tenant: str,
    user: str,
    events: Sequence[Interaction],
    old_recent: Sequence[bytes],
    old_affinity: dict[str, float],
    categories: Callable[[str], list[str]],
    models: Iterable[LiveModel],
    section: PersonalizationSection,
    recent_max: int,
) -> UserPlan:
    """Pure: one user's new events + current state → the writes."""
    plan = UserPlan(tenant, user)
    evs = sorted(events, key=lambda e: e.timestamp)
    plan.push = [recent_entry(e.item_id, e.event_type, e.timestamp) for e in evs][-recent_max:]
    plan.newest_ts = evs[-1].timestamp if evs else 0
    aff = dict(old_affinity)
    changed: set[str] = set()
    for e in evs:
        w = event_weight(e.event_type, e.value, section.event_weights, section.default_weight)
        if w <= 0:  # log-space sums hold positive mass only; negative feedback is the model's job
            continue
        x = log_weight(w, e.timestamp, section.affinity_half_life_s)
        for c in categories(e.item_id):
            aff[c] = logaddexp(aff.get(c), x)
            changed.add(c)
    if len(aff) > section.affinity_max_categories:
        ranked = sorted(aff, key=lambda c: aff[c], reverse=True)
        plan.drop_categories = [c for c in ranked[section.affinity_max_categories :] if c in old_affinity]
        keep = set(ranked[: section.affinity_max_categories])
        changed &= keep
    plan.affinity = {c: aff[c] for c in changed}
    # the list as it will be after LPUSH + LTRIM, oldest → newest
    newest_first = list(reversed(plan.push)) + list(old_recent)
    history = [parse_recent(r) for r in reversed(newest_first[:recent_max])]
    for lm in models:
        t0 = time.perf_counter()
        vec = encode_user(lm, history, user, section)
        FOLD_SECONDS.labels(lm.name).observe(time.perf_counter() - t0)
        if vec is not None:
            plan.vectors.append((lm, vec))
    return plan


def newest_publishes(records: Iterable[Record[ModelPublished]], wants: Callable[[str], bool]) -> list[ModelPublished]:
    """Pure: the last publish per followed model name in ``records`` (log order), in first-seen name order.

    ``models.published.v1`` is keyed by model name, so one name's publishes share a partition and
    arrive in order: the last one is the newest. Older ones (a restart re-reads the retained
    history) must never be acted upon.
    """
    latest: dict[str, ModelPublished] = {}
    for r in records:
        ev = r.value
        if ev is not None and wants(ev.name):
            latest[ev.name] = ev
    return list(latest.values())


# ------------------------------------------------------------------------------- state holders
class ModelBook:
    """The live version of each followed model (thread-safe swap)."""

    def __init__(self, follow: Sequence[str]) -> None:
        self.follow = set(follow)
        self._live: dict[str, LiveModel] = {}
        self._lock = threading.Lock()

    def wants(self, name: str) -> bool:
        return not self.follow or name in self.follow

    def live(self) -> list[LiveModel]:
        with self._lock:
            return list(self._live.values())

    def get(self, name: str) -> LiveModel | None:
        with self._lock:
            return self._live.get(name)

    def swap(self, lm: LiveModel) -> LiveModel | None:
        with self._lock:
            prev = self._live.get(lm.name)
            self._live[lm.name] = lm
        if prev is not None:
            LIVE.labels(prev.name, prev.version).set(0)
        LIVE.labels(lm.name, lm.version).set(1)
        return prev


class CategoryIndex:
    """Item → categories: from catalog.items (authoritative) or Redis item metadata (cached)."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._catalog: dict[tuple[str, str], list[str]] = {}
        self._cache: dict[tuple[str, str], tuple[list[str], float]] = {}

    def put(self, tenant: str, item: str, categories: list[str] | None) -> None:
        if categories is None:
            self._catalog.pop((tenant, item), None)
        else:
            self._catalog[(tenant, item)] = list(categories)
        self._cache.pop((tenant, item), None)

    def get(self, tenant: str, item: str) -> list[str] | None:
        hit = self._catalog.get((tenant, item))
        if hit is not None:
            return hit
        cached = self._cache.get((tenant, item))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def remember(self, tenant: str, item: str, categories: list[str]) -> None:
        self._cache[(tenant, item)] = (categories, time.monotonic() + self.ttl_s)


# ------------------------------------------------------------------------------- I/O handler
class PersonalizationHandler:
    """Batch handlers of the personalization consumers (interactions; models + catalog)."""

    def __init__(
        self,
        client: Any,
        redis_settings: RedisSettings,
        section: PersonalizationSection,
        tenant: str,
        models: ModelBook | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.r = client
        self.registry = registry  # None: trust each batch's newest publish (no registry to check)
        self.rs = redis_settings
        self.s = section
        self.tenant = tenant
        self.keys = Keys(tenant)
        self.models = models or ModelBook(section.models)
        self.categories = CategoryIndex(section.item_meta_cache_s)
        self.deduper = Deduper(client, CONSUMER, redis_settings.dedupe_ttl_s, self.keys)
        self._keys: dict[str, Keys] = {tenant: self.keys}
        self.applied = 0

    def k(self, tenant: str) -> Keys:
        k = self._keys.get(tenant)
        if k is None:
            k = self._keys[tenant] = Keys(tenant)
        return k

    # -- interactions ------------------------------------------------------------------------
    def handle_interactions(self, records: list[Record[Interaction]]) -> None:
        events = [r.value for r in records if r.value is not None]
        if not events:
            return
        ids = [(e.event_id, e.tenant) for e in events]
        flags = self.deduper.unseen(ids)
        fresh = [e for e, new in zip(events, flags, strict=True) if new]
        DUPLICATES.inc(len(events) - len(fresh))
        if not fresh:
            return
        groups: dict[tuple[str, str], list[Interaction]] = {}
        for e in fresh:
            actor = actor_id(e.user_id, e.session_id, e.context)
            if actor is not None:
                groups.setdefault((e.tenant, actor), []).append(e)
        plans = self._plan(groups) if groups else []
        fresh_ids = [(e.event_id, e.tenant) for e in fresh]

        def write(pipe: Any, new_flags: list[bool]) -> None:
            if not all(new_flags):
                raise _Raced("events applied by another consumer meanwhile")
            self._write(pipe, plans)

        self.deduper.apply(fresh_ids, write)
        now = now_ms()
        for e in fresh:
            EVENTS.labels(e.event_type).inc()
        for p in plans:
            STATE_LAG.observe(max(0, now - p.newest_ts) / 1000.0)
            for lm, _ in p.vectors:
                VECTORS.labels(lm.name, "fold_in").inc()
        self.applied += len(fresh)

    def _plan(self, groups: dict[tuple[str, str], list[Interaction]]) -> list[UserPlan]:
        cap = self.rs.recent_items_max
        pipe = self.r.pipeline(transaction=False)
        order = list(groups)
        for tenant, user in order:
            k = self.k(tenant)
            pipe.lrange(k.recent_items(user), 0, cap - 1)
            pipe.hgetall(k.affinity(user))
        missing: list[tuple[str, str]] = []
        for (tenant, _), evs in groups.items():
            for e in evs:
                if self.categories.get(tenant, e.item_id) is None and (tenant, e.item_id) not in missing:
                    missing.append((tenant, e.item_id))
        for tenant, item in missing:
            pipe.hget(self.k(tenant).item_meta(item), "categories")
        res = pipe.execute()
        for n, (tenant, item) in enumerate(missing):
            self.categories.remember(tenant, item, parse_categories(res[2 * len(order) + n]))
        live = self.models.live()
        plans = []
        for n, (tenant, user) in enumerate(order):
            old_recent = res[2 * n]
            old_aff = {(c.decode() if isinstance(c, bytes) else c): float(v) for c, v in (res[2 * n + 1] or {}).items()}
            plans.append(
                plan_user(
                    tenant,
                    user,
                    groups[(tenant, user)],
                    old_recent,
                    old_aff,
                    lambda item, t=tenant: self.categories.get(t, item) or [],
                    live,
                    self.s,
                    cap,
                )  # fmt: skip
            )
        return plans

    def _write(self, pipe: Any, plans: list[UserPlan]) -> None:
        cap = self.rs.recent_items_max
        for p in plans:
            k = self.k(p.tenant)
            if p.push:
                rk = k.recent_items(p.user)
                pipe.lpush(rk, *p.push)
                pipe.ltrim(rk, 0, cap - 1)
                pipe.expire(rk, self.rs.recent_items_ttl_s)
            if p.affinity or p.drop_categories:
                ak = k.affinity(p.user)
                if p.drop_categories:
                    pipe.hdel(ak, *p.drop_categories)
                if p.affinity:
                    pipe.hset(ak, mapping={c: repr(v) for c, v in p.affinity.items()})
                pipe.expire(ak, self.rs.recent_items_ttl_s)
            for lm, vec in p.vectors:
                pipe.set(
                    k.user_vector(p.user, lm.name, lm.version),
                    np.asarray(vec, dtype=np.float32).tobytes(),
                    ex=self.rs.user_vector_ttl_s,
                )

    # -- catalog (categories for affinities) -------------------------------------------------
    def handle_catalog(self, records: list[Record[ItemUpdate]]) -> None:
        for r in records:
            if r.value is None:
                if r.key is not None:  # a tombstone: the item left the catalog of the key's tenant
                    self.categories.put(*parse_catalog_key(r.key, self.tenant), None)
                continue
            self.categories.put(r.value.tenant, r.value.item_id, list(r.value.categories))

    # -- models ------------------------------------------------------------------------------
    def handle_published(self, records: list[Record[ModelPublished]]) -> None:
        """Act on the newest publish per model name, and only when it is the registry's champion.

        The control consumer reads the retained topic from the beginning at every start, so a
        batch (or a series of batches) can carry superseded versions: activating each in turn
        would bulk-load, backfill and briefly serve stale models. A superseded publish is
        skipped; its successor's publish follows in the log (or was loaded at start).
        """
        for ev in newest_publishes(records, self.models.wants):
            cur = self.models.get(ev.name)
            if cur is not None and cur.version == ev.version:
                continue
            if not self._is_champion(ev.name, ev.version):
                SKIPPED_PUBLISHES.labels(ev.name).inc()
                log.info("published version is not the champion; skipped",
                         extra={"model": ev.name, "version": ev.version, "action": ev.action})  # fmt: skip
                continue
            self.activate(ev.name, ev.version, ev.artifact_uri)

    def _is_champion(self, name: str, version: str) -> bool:
        if self.registry is None:
            return True
        try:
            champ = self.registry.champion(name)
        except Exception as exc:  # registry unreachable: retry the batch rather than guess
            raise TransientError(f"registry unreadable: {exc!r}") from exc
        return champ is not None and champ.version == version

    def activate(self, name: str, version: str, uri: str) -> LiveModel:
        """Load a version, bulk-load its user vectors, make it live, backfill unknown users."""
        t0 = time.perf_counter()
        lm = load_live_model(name, version, uri)
        n = self.bulk_load(lm)
        prev = self.models.swap(lm)
        log.info(
            "model version live",
            extra={"model": name, "version": version, "previous": prev.version if prev else None,
                   "bulk_loaded": n, "seconds": round(time.perf_counter() - t0, 3)},
        )  # fmt: skip
        if self.s.backfill_on_publish and lm.has_vectors:
            self.backfill(lm)
        return lm

    def bulk_load(self, lm: LiveModel) -> int:
        """Write the model's own user vectors (pipelined in chunks, ``SET NX``)."""
        art = lm.artifact
        if not lm.has_vectors or art.user_vectors is None or art.user_ids is None:
            return 0
        chunk = self.s.bulk_load_chunk
        ttl = self.rs.user_vector_ttl_s
        vecs = art.user_vectors
        for lo in range(0, len(art.user_ids), chunk):
            pipe = self.r.pipeline(transaction=False)
            for j in range(lo, min(lo + chunk, len(art.user_ids))):
                # NX: an existing key is this very vector or a fresher fold-in (a restart must not regress it)
                key = self.keys.user_vector(art.user_ids[j], lm.name, lm.version)
                pipe.set(key, vecs[j].tobytes(), ex=ttl, nx=True)
            pipe.execute()
        BULK_LOADED.labels(lm.name).inc(len(art.user_ids))
        return len(art.user_ids)

    def backfill(self, lm: LiveModel, count: int = 500) -> int:
        """Vectors for users with recent items that the model does not know (``SET NX``)."""
        pattern = self.keys.recent_items("*")
        known = lm.artifact.user_index
        written = 0
        batch: list[str] = []

        def flush(users: list[str]) -> int:
            pipe = self.r.pipeline(transaction=False)
            for u in users:
                pipe.lrange(self.keys.recent_items(u), 0, self.rs.recent_items_max - 1)
            lists = pipe.execute()
            pipe = self.r.pipeline(transaction=False)
            n = 0
            for u, raw in zip(users, lists, strict=True):
                history = [parse_recent(x) for x in reversed(raw)]
                vec = encode_user(lm, history, u, self.s)
                if vec is not None:
                    pipe.set(self.keys.user_vector(u, lm.name, lm.version), vec.tobytes(),
                             ex=self.rs.user_vector_ttl_s, nx=True)  # fmt: skip
                    n += 1
            pipe.execute()
            return n

        prefix, suffix = self.keys.user(""), ":recent"
        head = prefix[: prefix.index("{") + 1]
        for key in self.r.scan_iter(match=pattern, count=count):
            text = key.decode() if isinstance(key, bytes) else key
            if not (text.startswith(head) and text.endswith("}" + suffix)):
                continue
            user = text[len(head) : -len("}" + suffix)]
            if user in known:
                continue
            batch.append(user)
            if len(batch) >= count:
                written += flush(batch)
                batch = []
        if batch:
            written += flush(batch)
        VECTORS.labels(lm.name, "backfill").inc(written)
        return written
