"""The request pipeline shared by HTTP and gRPC: validate → variant → user state → candidates
→ blend → rules → diversity → response dict (+ impression).

Candidate sources: model retrieval, co-visitation of the recent items, trending, popular, and
content: catalog items the served model does not know yet (new items, reachable otherwise only
once they trend or get co-visited) in the categories of the user's recent items, read from a
per-category index cached until that category changes; ``content_slots`` keeps the last list
position(s) for them, since they share no rank with the model and RRF alone would bury them.

User representation, in order: the user vector personalization wrote to Redis for the served
model version → the model's own user factors → the user's recent items from Redis (history
encoder of the artifact; item-item models always score from history) → cold start
(trending, then popular, optionally within the context's category). When Redis is down the
same pipeline runs on what is in memory (model factors, artifact popularity, the last popular
list) and the response says ``degraded: true``.

Responses are plain dicts (serialised with orjson by the HTTP layer, copied into protobuf by
the gRPC layer): no per-item model validation on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recmesh.core.errors import NotFound, PayloadTooLarge, Unavailable, ValidationError
from recmesh.core.events import new_id
from recmesh.core.store import Keys
from recmesh.scoring import metrics as sm
from recmesh.scoring.blending import Candidate, rrf_blend
from recmesh.scoring.catalog import Catalog, TenantCatalog
from recmesh.scoring.experiments import Experiments
from recmesh.scoring.impressions import ImpressionPublisher
from recmesh.scoring.models import ModelHolder, ServedModel
from recmesh.scoring.retrieval import top_k_scores
from recmesh.scoring.rules import apply_boosts, diversify
from recmesh.scoring.settings import WINDOWS, ScoringSection
from recmesh.scoring.state import StateReader, UserState

log = logging.getLogger(__name__)
CONTENT_CATEGORIES = 8  # most categories of the user's recent items the content source reads


# --------------------------------------------------------------------------------- validation
def check_id(value: Any, name: str, max_len: int) -> str:
    """A non-empty printable id without surrounding whitespace (422 otherwise)."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"'{name}' must be a non-empty string")
    if len(value) > max_len:
        raise ValidationError(f"'{name}' is longer than {max_len} characters")
    if value != value.strip() or not value.isprintable():
        raise ValidationError(f"'{name}' has surrounding whitespace or control characters")
    return value


def check_k(k: Any, section: ScoringSection) -> int:
    if k is None:
        return section.default_k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= section.max_k:
        raise ValidationError(f"k must be an integer between 1 and {section.max_k}")
    return k


def check_list(values: Sequence[Any] | None, name: str, section: ScoringSection) -> list[str]:
    if not values:
        return []
    if len(values) > section.max_list_len:
        raise PayloadTooLarge(f"'{name}' has {len(values)} entries; at most {section.max_list_len}")
    return [check_id(v, name, section.max_id_length) for v in values]


def check_boosts(values: Mapping[str, Any] | None, name: str, section: ScoringSection) -> dict[str, float]:
    if not values:
        return {}
    if len(values) > section.max_list_len:
        raise PayloadTooLarge(f"'{name}' has {len(values)} entries; at most {section.max_list_len}")
    out = {}
    for key, f in values.items():
        check_id(key, name, section.max_id_length)
        if isinstance(f, bool) or not isinstance(f, int | float) or not 0 < f <= 1e6:
            raise ValidationError(f"'{name}[{key}]' must be a number in (0, 1e6]")
        out[key] = float(f)
    return out


def check_window(window: str | None, default: str) -> str:
    w = window or default
    if w not in WINDOWS:
        raise ValidationError(f"window must be one of {', '.join(WINDOWS)}")
    return w


@dataclass(slots=True)
class RecRequest:
    """A validated recommend request."""

    user_id: str
    k: int
    exclude_seen: bool | None = None
    category: str | None = None
    variant: str | None = None
    context: dict[str, str] = field(default_factory=dict)
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    boost_items: dict[str, float] = field(default_factory=dict)
    boost_categories: dict[str, float] = field(default_factory=dict)


def parse_recommend(section: ScoringSection, user_id: Any, **kw: Any) -> RecRequest:
    """Validate raw request values (from a query, JSON body or protobuf) into a :class:`RecRequest`."""
    ml = section.max_id_length
    ctx = kw.get("context") or {}
    if len(ctx) > 64:
        raise PayloadTooLarge("'context' has more than 64 entries")
    if any(not isinstance(k, str) or not isinstance(v, str) or len(k) > ml or len(v) > 1024 for k, v in ctx.items()):
        raise ValidationError("'context' must map short strings to strings")
    category = kw.get("category") or None
    variant = kw.get("variant") or None
    return RecRequest(
        user_id=check_id(user_id, "user_id", ml),
        k=check_k(kw.get("k"), section),
        exclude_seen=kw.get("exclude_seen"),
        category=check_id(category, "category", ml) if category is not None else None,
        variant=check_id(variant, "variant", ml) if variant is not None else None,
        context=dict(ctx),
        include=check_list(kw.get("include_items"), "include_items", section),
        exclude=check_list(kw.get("exclude_items"), "exclude_items", section),
        boost_items=check_boosts(kw.get("boost_items"), "boost_items", section),
        boost_categories=check_boosts(kw.get("boost_categories"), "boost_categories", section),
    )


# --------------------------------------------------------------------------------- reasons
def _reason(c: Candidate, cat: TenantCatalog, content_is_new: bool = False) -> str:
    src = c.source
    if src == "model":
        return f"because you viewed {cat.title(c.ref)}" if c.ref else "recommended for you"
    if src == "covisit":
        return f"similar to {cat.title(c.ref)} you viewed" if c.ref else "often viewed together"
    if src == "trending":
        return f"trending in {c.ref}" if c.ref else "trending now"
    if src == "content":
        if content_is_new:  # recommend: a new item, ref = the shared category
            return f"new in {c.ref}" if c.ref else "new for you"
        return f"same category as {cat.title(c.ref)}" if c.ref else "similar content"
    if src == "similar":
        return f"similar to {cat.title(c.ref)}" if c.ref else "similar"
    if src == "boost":
        return "promoted"
    return "popular"


def _keep_content_slots(top: list[Candidate], blended: list[Candidate], slots: int, k: int) -> list[Candidate]:
    """The top-k list with its last ``slots`` positions given to the best content candidates the
    blend left out (fewer when it already holds some, or when there are no more)."""
    have = sum(1 for c in top if c.source == "content")
    if have >= slots:
        return top
    present = {c.item_id for c in top}
    extra = [c for c in blended if c.source == "content" and c.item_id not in present][: slots - have]
    if not extra:
        return top
    return top[: max(k - len(extra), 0)] + extra if len(top) + len(extra) > k else top + extra


def explain_model_candidates(model: ServedModel, cands: list[Candidate], recent: Sequence[tuple[str, int]]) -> None:
    """Point each model candidate's reason at the recent item that explains it best, in place.

    Item-item models: the history item with the largest recency-weighted contribution to the
    candidate's score; vector models: the history item nearest to it (cosine). Only the final k
    candidates are explained (a few dot products); without two known recent items the shared
    reference (the newest recent item) stays.
    """
    ix = model.item_index
    hist = [ix[i] for i, _ in reversed(recent) if i in ix]  # oldest → newest
    targets = [(j, ix[c.item_id]) for j, c in enumerate(cands) if c.source == "model" and c.item_id in ix]
    if len(hist) < 2 or not targets:
        return
    h_idx = np.asarray(hist, dtype=np.int64)
    t_idx = np.asarray([t for _, t in targets], dtype=np.int64)
    art = model.artifact
    if model.kind == "vectors" and model.normed is not None:
        contrib = model.normed[t_idx] @ model.normed[h_idx].T
    elif art.item_item is not None:
        w = art.history_weights(n=len(hist))
        contrib = (art.item_item[np.ix_(h_idx, t_idx)] * w[:, None]).T
    else:
        return
    best = contrib.shape[1] - 1 - np.argmax(contrib[:, ::-1], axis=1)  # ties: the newest item
    ids = model.item_ids
    for (j, _), b in zip(targets, best.tolist(), strict=True):
        cands[j].ref = ids[hist[b]]


# --------------------------------------------------------------------------------- engine
class Engine:
    """Computes responses. One instance per process, shared by the HTTP and gRPC front ends."""

    def __init__(
        self,
        section: ScoringSection,
        models: ModelHolder,
        catalog: Catalog,
        state: StateReader | None,
        experiments: Experiments,
        impressions: ImpressionPublisher | None,
        default_tenant: str,
    ) -> None:
        self.s = section
        self.models = models
        self.catalog = catalog
        self.state = state
        self.experiments = experiments
        self.impressions = impressions
        self.default_tenant = default_tenant
        self._keys: dict[str, Keys] = {}
        # last popular list read from Redis per tenant: the Redis-down / no-model fallback
        self.popular_cache: dict[str, list[str]] = {}
        self.popular_tenants: set[str] = {default_tenant}
        self._children: dict[Any, Any] = {}

    # -- helpers ------------------------------------------------------------------------------
    def keys(self, tenant: str) -> Keys:
        k = self._keys.get(tenant)
        if k is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            k = self._keys[tenant] = Keys(tenant)
        return k

    @property
    def ready(self) -> bool:
        return self.models.ready or bool(self.popular_cache.get(self.default_tenant))

    def _check_category(self, category: str | None, cat: TenantCatalog) -> None:
        if category is not None and category not in cat.by_category:
            raise ValidationError(f"unknown category {category!r}")

    def _metric(self, metric: Any, *labels: str) -> Any:
        """Labelled child, cached: ``labels()`` costs more than the observation itself."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _emit(self, tenant: str, surface: str, body: dict[str, Any], t0: float, endpoint: str) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for it in body["items"]:
            counts[it["source"]] = counts.get(it["source"], 0) + 1
        for src, n in counts.items():
            self._metric(sm.SERVED_ITEMS, src).inc(n)
        self._metric(sm.REQUEST_SECONDS, endpoint, body.get("variant") or "none").observe(time.perf_counter() - t0)
        if self.impressions is not None:
            self.impressions.publish(tenant, surface, body)
        return body

    def _popular_fallback(self, model: ServedModel | None, tenant: str, n: int) -> list[str]:
        cached = self.popular_cache.get(tenant)
        if cached:
            return cached[:n]
        if model is not None:
            if n <= len(model.popular_ids):
                return model.popular_ids[:n]
            ids = model.item_ids
            return [ids[i] for i in model.popular_idx[:n].tolist()]
        return []

    def _category_subset(self, model: ServedModel, cat: TenantCatalog, tenant: str, category: str) -> np.ndarray:
        def build() -> np.ndarray:
            ix = model.item_index
            members = cat.by_category.get(category, frozenset())
            return np.fromiter(sorted(ix[i] for i in members if i in ix and i not in cat.blocked), dtype=np.int64)

        return model.cached(("cat", tenant, self.catalog.snapshot.version, category), build)  # type: ignore[no-any-return]

    # -- model candidates ---------------------------------------------------------------------
    def _query_vector(self, model: ServedModel, user_id: str, st: UserState | None) -> tuple[Any, str | None, str]:
        """(query vector or None, ref item for the reason, how it was obtained)."""
        art = model.artifact
        if st is not None and st.vector is not None and len(st.vector) == model.dim * 4:
            return np.frombuffer(st.vector, dtype=np.float32), None, "redis_vector"
        uix = art.user_index.get(user_id)
        if uix is not None and art.user_vectors is not None:
            return art.user_vectors[uix], None, "user_factors"
        if st is not None and st.recent:
            ix = model.item_index
            hist = [(ix[i], ts) for i, ts in reversed(st.recent) if i in ix]  # oldest → newest
            if hist:
                idx = np.fromiter((h[0] for h in hist), dtype=np.int64, count=len(hist))
                ts = np.fromiter((h[1] for h in hist), dtype=np.float64, count=len(hist))
                w = art.history_weights(timestamps_ms=ts)
                return art.user_vector_from_history(idx, w), model.item_ids[int(idx[-1])], "history"
        return None, None, "cold_start"

    def _model_candidates(
        self,
        model: ServedModel,
        req: RecRequest,
        st: UserState | None,
        ok: Callable[[str], bool],
        cat: TenantCatalog,
        tenant: str,
        need: int,
    ) -> tuple[list[tuple[str, str | None]], str]:
        ids = model.item_ids
        ix = model.item_index
        subset = None
        if req.include:
            subset = np.fromiter(sorted({ix[i] for i in req.include if i in ix}), dtype=np.int64)
        elif req.category is not None:
            subset = self._category_subset(model, cat, tenant, req.category)
        scores = None
        ref = None
        if model.kind == "vectors":
            q, ref, how = self._query_vector(model, req.user_id, st)
            if q is None:
                return [], how
        elif model.kind == "item_item":
            hist = [ix[i] for i, _ in reversed(st.recent) if i in ix] if st is not None else []
            if not hist:
                return [], "cold_start"
            art = model.artifact
            scores = art.score_history(np.asarray(hist, dtype=np.int64), art.history_weights(n=len(hist)))
            ref, how = ids[hist[-1]], "history"
        else:  # popularity artifact: its ranking is the model's list
            scores, how = model.artifact.popularity, "popularity"
        out: list[tuple[str, str | None]] = []
        if scores is not None:
            if subset is not None:
                top, _ = top_k_scores(scores[subset], need * 2 + len(req.exclude))
                top = subset[top]
            else:
                top, _ = top_k_scores(scores, need + len(st.seen if st else ()) + len(req.exclude) + 50)
            out = [(ids[i], ref) for i in top.tolist() if ok(ids[i])]
            return out[:need], how
        assert model.index is not None
        if subset is not None:
            top, _ = model.index.search_subset(q, subset, need + len(st.seen if st else ()) + len(req.exclude))
            return [(ids[i], ref) for i in top.tolist() if ok(ids[i])][:need], how
        n = need + len(st.seen if st else ()) + len(req.exclude) + 10
        while True:
            top, _ = model.index.search(q, n)
            out = [(ids[i], ref) for i in top.tolist() if ok(ids[i])]
            if len(out) >= need or n >= model.index.n:
                return out[:need], how
            n = min(n * 4, model.index.n)  # many blocked items among the nearest: widen

    # -- content candidates -------------------------------------------------------------------
    def _new_in_category(self, model: ServedModel, cat: TenantCatalog, tenant: str, category: str) -> tuple[str, ...]:
        """Items of ``category`` the model does not know, sorted; rebuilt only when the category changes."""
        members = cat.by_category.get(category)
        if not members:
            return ()
        known = model.item_index

        def build() -> tuple[str, ...]:
            return tuple(sorted(i for i in members if i not in known))

        return model.cached_while(("new", tenant, category), members, build)  # type: ignore[no-any-return]

    def _content_candidates(
        self,
        model: ServedModel,
        user_id: str,
        st: UserState,
        ok: Callable[[str], bool],
        cat: TenantCatalog,
        tenant: str,
        need: int,
    ) -> list[tuple[str, str | None]]:
        """New items sharing categories with the recent items: (item, category), best first.

        Reads at most CONTENT_CATEGORIES categories and ``4·need`` entries of each; an item scores
        the recency weight of every recent category it is in. Each user starts reading a category
        at an offset from a hash of their id, so one new item does not take every user's slot.
        """
        cats_of = cat.categories_of
        weight: dict[str, float] = {}
        for rank, (i, _) in enumerate(st.recent):
            w = 0.5**rank  # newer recent items weigh more
            for c in cats_of(i):
                weight[c] = weight.get(c, 0.0) + w
        if not weight:
            return []
        top = sorted(weight, key=lambda c: (-weight[c], c))[:CONTENT_CATEGORIES]
        start = zlib.crc32(user_id.encode())
        found: dict[str, tuple[float, str]] = {}
        for c in top:
            new = self._new_in_category(model, cat, tenant, c)
            n = len(new)
            taken = 0
            for j in range(min(n, 4 * need)):
                i = new[(start + j) % n]
                if i in found or not ok(i):
                    continue
                mine = [(weight[x], x) for x in cats_of(i) if x in weight]
                found[i] = (sum(w for w, _ in mine), max(mine)[1])
                taken += 1
                if taken >= need:
                    break
        ranked = sorted(found.items(), key=lambda kv: -kv[1][0])  # stable: ties keep reading order
        return [(i, ref) for i, (_, ref) in ranked[:need]]

    # -- recommend ------------------------------------------------------------------------------
    async def recommend(self, req: RecRequest, tenant: str | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        tenant = tenant or self.default_tenant
        s = self.s
        cat = self.catalog.snapshot.tenant(tenant)
        self._check_category(req.category, cat)
        vname, variant = self.experiments.resolve(req.user_id, req.variant)
        model = self.models.get(variant.model or s.models[0], variant.version)
        keys = self.keys(tenant)
        exclude_seen = variant.exclude_seen if req.exclude_seen is None else req.exclude_seen
        window = variant.trending_window or s.trending_window
        ctx_cat = req.category or req.context.get("category") or None
        if ctx_cat is not None and ctx_cat not in cat.by_category:
            ctx_cat = None  # an unknown context category only loses the per-category trending list
        need = max(s.candidates_per_source, 3 * req.k)
        weights = variant.blend

        st: UserState | None = None
        if self.state is not None:
            st = await self.state.user_state(
                keys,
                req.user_id,
                keys.user_vector(req.user_id, model.name, model.version)
                if model is not None and model.kind == "vectors"
                else None,
                s.recent_items,
                s.max_seen if exclude_seen else 0,
                keys.trending(window, ctx_cat) if ctx_cat else None,
                keys.trending(window),
                need,
            )
        degraded = self.state is not None and st is None
        if degraded:
            self._metric(sm.FALLBACKS, "redis_down").inc()

        seen = frozenset(st.seen) if st is not None else frozenset()
        excl = frozenset(req.exclude)
        blocked = cat.blocked
        allowed = frozenset(req.include) if req.include else None
        category = req.category
        cats_of = cat.categories_of

        def ok(i: str) -> bool:
            if i in seen or i in excl or i in blocked:
                return False
            if allowed is not None and i not in allowed:
                return False
            return category is None or category in cats_of(i)

        sources: dict[str, list[tuple[str, str | None]]] = {}
        how = "no_model"
        if model is not None:
            sources["model"], how = self._model_candidates(model, req, st, ok, cat, tenant, need)
        if how != "redis_vector":
            self._metric(sm.FALLBACKS, how).inc()

        if st is not None and st.recent and weights.get("covisit", 0) > 0 and s.covisit_items:
            recent = [i for i, _ in st.recent[: s.covisit_items]]
            rows = await self.state.covisit(keys, recent, s.covisit_per_item) if self.state else None
            if rows:
                agg: dict[str, list[Any]] = {}
                for rank, (src, row) in enumerate(zip(recent, rows, strict=True)):
                    w = 0.5**rank  # newer recent items weigh more
                    for nb, sc in row:
                        e = agg.get(nb)
                        if e is None:
                            agg[nb] = [sc * w, src, sc * w]
                        else:
                            e[0] += sc * w
                            if sc * w > e[2]:
                                e[1], e[2] = src, sc * w
                ranked = sorted(agg.items(), key=lambda kv: -kv[1][0])
                sources["covisit"] = [(i, e[1]) for i, e in ranked if ok(i)][:need]

        if st is not None and weights.get("trending", 0) > 0:
            if st.trending:
                sources["trending"] = [(i, ctx_cat) for i in st.trending if ok(i)][:need]
            elif st.trending_global:
                tr = st.trending_global
                if ctx_cat is not None:  # no per-category list: the global one within the category
                    tr = [i for i in tr if ctx_cat in cats_of(i)] or tr
                    sources["trending"] = [(i, ctx_cat if ctx_cat in cats_of(i) else None) for i in tr if ok(i)][:need]
                else:
                    sources["trending"] = [(i, None) for i in tr if ok(i)][:need]
        if model is not None and st is not None and st.recent and weights.get("content", 0) > 0:
            content = self._content_candidates(model, req.user_id, st, ok, cat, tenant, need)
            if content:
                sources["content"] = content
        n_model = len(sources.get("model", ()))
        if weights.get("popular", 0) > 0 or n_model < req.k:
            if tenant not in self.popular_tenants and len(self.popular_tenants) < 1000:
                self.popular_tenants.add(tenant)  # the background task keeps its popular list fresh
            pop = self._popular_fallback(model, tenant, need * 2)
            if ctx_cat is not None and not n_model:
                pop = [i for i in pop if ctx_cat in cats_of(i)] + [i for i in pop if ctx_cat not in cats_of(i)]
            sources["popular"] = [(i, None) for i in pop if ok(i)][:need]

        for name, lst in sources.items():
            if lst:
                self._metric(sm.CANDIDATES, name).inc(len(lst))
        eff_weights = weights
        if sources.get("popular") and not weights.get("popular"):
            eff_weights = {**weights, "popular": 0.1}  # popular fills what the other sources cannot
        cands = rrf_blend(sources, eff_weights)
        if not cands and model is None and not sources.get("popular") and not degraded and not self.ready:
            raise Unavailable("no model loaded and no popularity yet")

        boost_cats = {**variant.boost_categories, **req.boost_categories}
        if req.boost_items:
            present = {c.item_id for c in cands}
            base = min((c.score for c in cands), default=1.0 / 61.0)
            for i in req.boost_items:
                if i not in present and ok(i):
                    cands.append(Candidate(i, base, "boost", None, 0.0))
        cands = blended = apply_boosts(cands, req.boost_items, boost_cats, cats_of)
        if variant.mmr_lambda < 1.0 and model is not None and model.normed is not None:
            pool = cands[: req.k * s.mmr_pool]
            cands = diversify(pool, model.embeddings([c.item_id for c in pool]), variant.mmr_lambda, req.k)
        else:
            cands = cands[: req.k]
        slots = min(variant.content_slots, req.k // 5) if sources.get("content") else 0
        if slots:
            cands = _keep_content_slots(cands, blended, slots, req.k)
        if model is not None and st is not None and st.recent:
            explain_model_candidates(model, cands, st.recent)
        body = {
            "request_id": new_id(),
            "user_id": req.user_id,
            "model_name": model.name if model is not None else None,
            "model_version": model.version if model is not None else None,
            "variant": vname,
            "degraded": degraded,
            "items": [
                {
                    "item_id": c.item_id,
                    "score": c.score,
                    "rank": r,
                    "source": c.source,
                    "reason": _reason(c, cat, content_is_new=True),
                }
                for r, c in enumerate(cands, start=1)
            ],
        }
        return self._emit(tenant, "recommend", body, t0, "recommend")

    async def recommend_many(self, reqs: list[RecRequest], tenant: str | None = None) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.recommend(r, tenant) for r in reqs)))

    # -- similar --------------------------------------------------------------------------------
    async def similar(
        self, item_id: Any, k: Any, tenant: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = self.s
        item_id = check_id(item_id, "item_id", s.max_id_length)
        k = check_k(k, s)
        user = check_id(user_id, "user_id", s.max_id_length) if user_id else None
        tenant = tenant or self.default_tenant
        cat = self.catalog.snapshot.tenant(tenant)
        vname, variant = self.experiments.resolve(user, None)
        model = self.models.get(variant.model or s.models[0], variant.version)
        blocked = cat.blocked
        items: list[Candidate] = []
        if model is not None and item_id in model.item_index:
            idx, sc = model.similar(model.item_index[item_id], k + 50)
            ids = model.item_ids
            items = [Candidate(ids[i], v, "similar", item_id) for i, v in zip(idx.tolist(), sc.tolist(), strict=True)]
            items = [c for c in items if c.item_id not in blocked and c.item_id != item_id]
        elif item_id in cat.items:
            # a new item the model has not seen: content similarity by shared categories, by popularity
            sm.FALLBACKS.labels("content").inc()
            mine = cat.categories_of(item_id)
            pop = self._popular_fallback(model, tenant, 10_000)
            rank = {i: r for r, i in enumerate(pop)}
            pool = {i for c in mine for i in cat.by_category.get(c, ())} - {item_id}
            scored = sorted(pool - blocked, key=lambda i: (-len(mine & cat.categories_of(i)), rank.get(i, 1 << 30), i))
            items = [Candidate(i, float(len(mine & cat.categories_of(i))), "content", item_id) for i in scored]
        else:
            raise NotFound(f"unknown item {item_id!r}")
        body = {
            "request_id": new_id(),
            "user_id": user,
            "model_name": model.name if model is not None else None,
            "model_version": model.version if model is not None else None,
            "variant": vname if user else None,
            "degraded": False,
            "items": [
                {"item_id": c.item_id, "score": c.score, "rank": r, "source": c.source, "reason": _reason(c, cat)}
                for r, c in enumerate(items[:k], start=1)
            ],
        }
        return self._emit(tenant, "similar", body, t0, "similar")

    # -- popular --------------------------------------------------------------------------------
    async def popular(
        self, k: Any, window: str | None = None, category: str | None = None, tenant: str | None = None
    ) -> dict[str, Any]:
        t0 = time.perf_counter()
        s = self.s
        k = check_k(k, s)
        window = check_window(window, s.trending_window)
        tenant = tenant or self.default_tenant
        cat = self.catalog.snapshot.tenant(tenant)
        if category:
            check_id(category, "category", s.max_id_length)
            self._check_category(category, cat)
        category = category or None
        model = self.models.get(s.models[0])
        keys = self.keys(tenant)
        blocked = cat.blocked
        n = k + len(blocked) if len(blocked) < 1000 else k * 4
        degraded = False
        source, ref = "trending", category
        ids: list[str] | None = None
        if self.state is not None:
            ids = await self.state.ranked(keys.trending(window, category), n)
            if ids is not None and not ids and category is not None:
                glob = await self.state.ranked(keys.trending(window), max(n * 10, 1000))
                ids = [i for i in glob or () if category in cat.categories_of(i)]
            if ids is not None and not ids:
                source, ref = "popular", None
                ids = await self.state.ranked(keys.popularity(), max(n * 10, 1000) if category else n)
        if ids is None:
            degraded = True
            self._metric(sm.FALLBACKS, "redis_down").inc()
        from_model = False
        if not ids:
            source, ref = "popular", None
            from_model = not self.popular_cache.get(tenant)
            ids = self._popular_fallback(model, tenant, 10_000 if category else n)
        if category is not None:
            ids = [i for i in ids if category in cat.categories_of(i)]
        ids = [i for i in ids if i not in blocked][:k]
        body = {
            "request_id": new_id(),
            "user_id": None,
            "model_name": model.name if model is not None and from_model else None,
            "model_version": model.version if model is not None and from_model else None,
            "variant": None,
            "degraded": degraded,
            "items": [
                {"item_id": i, "score": float(1.0 / r), "rank": r, "source": source,
                 "reason": f"trending in {ref}" if source == "trending" and ref else
                 ("trending now" if source == "trending" else "popular")}
                for r, i in enumerate(ids, start=1)
            ],
        }  # fmt: skip
        return self._emit(tenant, "popular", body, t0, "popular")

    # -- background -----------------------------------------------------------------------------
    async def refresh_popular(self) -> None:
        """Refresh the in-memory popular lists (fallback source; the default tenant's gates readiness)."""
        if self.state is None:
            return
        for tenant in list(self.popular_tenants):
            ids = await self.state.ranked(self.keys(tenant).popularity(), 1000)
            if ids:
                self.popular_cache[tenant] = ids
