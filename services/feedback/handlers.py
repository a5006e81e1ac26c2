"""The counts behind recommendations: seen items, popularity, trending, co-visitation, attribution.

Pure parts (testable without I/O): :func:`counter_updates` (log-space decayed popularity and
trending, per window and per category, merged per key), :func:`covisit_pairs` (items one
actor touched within ``covisit_window_s`` of each other) and :func:`attribute` (joins
engagements to one impression: clicks, conversions, labels). :class:`FeedbackHandler` does the
Redis I/O around them, one polled batch at a time, with every effect and the event-id markers
in one MULTI/EXEC (:meth:`Deduper.apply`): a crash or a replay never counts an event twice.

Redis state written (owner: feedback):

* ``Keys.seen(user)`` — sorted set item → last interaction ms, capped at ``redis.seen_max``
  (oldest dropped), TTL ``redis.seen_ttl_s``. Scoring's ``exclude_seen`` reads it, so it has a
  fast lane (:meth:`FeedbackHandler.handle_seen`, a consumer group of its own doing nothing
  else) that keeps it fresh even while the counters lag; the main lane writes it too.
* ``Keys.popularity()`` and ``Keys.trending(window[, category])`` — sorted sets of log-space
  decayed counts (``recmesh.core.realtime``): half-life ``popularity_half_life_s`` and one per
  trending window; event *timestamps* (not arrival) drive the decay, so replays are exact.
  Trimmed to ``counters_max_items``.
* ``Keys.covisit(item)`` — sorted set neighbour → co-occurrence count, trimmed to ``covisit_keep``.
* ``Keys.covisit_history(user)`` — sorted set item → last interaction ms, the co-visitation
  history: written only here, in the same transaction as the pairs, so a pair is computed from
  exactly the events applied before it (never from the seen fast lane, which may be ahead with
  later timestamps: a replay after a crash, or a lagging counter lane, gives the same pairs).
  Capped at ``covisit_max_neighbors_per_event + 1`` (all a new event can pair with), TTL
  ``redis.counters_ttl_s``.
* ``Keys.item_meta(item)`` — hash title / categories (JSON list) / available, from catalog.items.
* ``Keys.impression(request_id)`` — hash: ``meta`` (JSON: user, model, version, variant, ts,
  items with ranks) and markers ``c:<item>`` (clicked), ``v:<item>`` (converted), ``n:<item>``
  (negative label emitted), ``p:<event_id>`` (an engagement that arrived before its impression);
  TTL = attribution window (plus ``negatives_delay_s`` and one more window with timeout negatives on,
  so the sweep finds it). ``Keys.last_impression(user, item)`` → request id, TTL = window.
* ``Keys.impressions_due()`` — sorted set [tenant, request id] → ms its window closes (with
  ``timeout_negatives``); swept by :meth:`FeedbackHandler.sweep`.
* ``Keys.ctr(dim, value)`` — hash impressions / clicks / conversions per ``item``, ``variant``,
  ``model`` (``name:version``) and ``vm`` (``variant|name:version``).

Attribution rules (deterministic, so a hand-computed scenario matches exactly):

* every served item counts one impression (per item, variant, model, variant×model);
* an interaction joins an impression through its ``request_id``, else through the last
  impression of the same item to the same actor within the window; the item must be in the list;
* the first engagement of a ``click_types`` or ``conversion_types`` type on an (impression,
  item) counts one click and emits a positive label (label 1, with rank); the items of that
  list ranked *above* it (smaller rank) that were never clicked get a negative label (label 0)
  once (skip-above, Joachims 2002);
* the first ``conversion_types`` event on an (impression, item) counts one conversion;
* an engagement whose request id has no impression yet is parked in the impression hash and
  joined when the impression arrives (the two topics are consumed independently);
* an impression joins engagements until its window closes (``due`` in its meta: arrival + window);
* timeout negatives (:func:`timeout_negatives`): when the window of an impression that got *no*
  click has closed (and ``negatives_delay_s`` more), every item it showed gets a negative label,
  once. The sweep claims due impressions atomically (a Lua script moves them to a lease), so two
  replicas never both emit one; it emits, then removes the entry and the impression hash.

Labels are produced (and flushed) before the Redis transaction commits: at least once, with a
deterministic ``label_id`` (request, item, label) so the training reader can drop repeats (a crash
between the flush and the commit is the only way a label is emitted twice).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from recmesh.core.bus import EventProducer, Record
from recmesh.core.errors import TransientError
from recmesh.core.events import Interaction, ItemUpdate, LabeledInteraction, RecommendationServed, now_ms
from recmesh.core.metrics import Counter, Gauge, Histogram
from recmesh.core.realtime import (
    LOGADDEXP_ZSET_LUA,
    actor_id,
    encode_categories,
    log_weight,
    logaddexp,
    parse_categories,
)
from recmesh.core.settings import RedisSettings
from recmesh.core.store import Deduper, Keys
from recmesh.core.topics import FEEDBACK_LABELED, parse_catalog_key
from recmesh.feedback.settings import FeedbackSection

log = logging.getLogger(__name__)
CONSUMER = "feedback"
CONSUMER_SERVED = "feedback-served"

EVENTS = Counter("recmesh_feedback_events_total", "Interactions counted, by type.", ["event_type"])
DUPLICATES = Counter("recmesh_feedback_duplicates_total", "Events skipped as already counted.", ["topic"])
IMPRESSIONS = Counter("recmesh_feedback_impressions_total", "Items served.", ["variant", "model_version"])
CLICKS = Counter("recmesh_feedback_clicks_total", "Attributed clicks.", ["variant", "model_version"])
CONVERSIONS = Counter("recmesh_feedback_conversions_total", "Attributed conversions.", ["variant", "model_version"])
CTR = Gauge("recmesh_feedback_ctr", "Clicks / impressions (all replicas, from Redis).", ["variant", "model_version"])
CONVERSION_RATE = Gauge(
    "recmesh_feedback_conversion_rate", "Conversions / impressions (all replicas).", ["variant", "model_version"]
)
ATTRIBUTION_LAG = Histogram(
    "recmesh_feedback_attribution_lag_seconds", "Impression → attributed engagement (event time).",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)  # fmt: skip
LABELS = Counter("recmesh_feedback_labels_total", "Labeled examples emitted.", ["label"])
CLOSED = Counter(
    "recmesh_feedback_impressions_closed_total", "Impressions whose window closed, swept.",
    ["outcome"],  # clicked | unclicked (negatives emitted) | gone (expired before the sweep)
)  # fmt: skip
LATE = Counter("recmesh_feedback_late_engagements_total", "Engagements after their impression's window closed.")
SEEN_LAG = Histogram(
    "recmesh_feedback_seen_lag_seconds", "Event timestamp → seen-items written (the freshness path).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)  # fmt: skip


class _Raced(TransientError):
    """Another consumer applied some of these events meanwhile: recompute the batch."""


def model_label(name: str | None, version: str | None) -> str:
    return f"{name or 'none'}:{version or 'none'}"


def label_id(request_id: str, item_id: str, label: int) -> str:
    """Deterministic id of a label, so a re-emitted label is recognisable."""
    return hashlib.sha1(f"{request_id}\x00{item_id}\x00{label}".encode(), usedforsecurity=False).hexdigest()


#: Claim due impressions: KEYS[1] = Keys.impressions_due(); ARGV = [due up to (ms), lease until (ms),
#: max members]. Claimed members are re-scored to the lease's end, atomically, so a concurrent sweep
#: (another replica) never gets them, and a sweeper that dies mid-way hands them on when it expires.
CLAIM_DUE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], m) end
return due
"""
CLAIM_LEASE_S = 60.0  # longer than one sweep round can take (labels flush within 10 s)


# ------------------------------------------------------------------------------- pure logic
def event_weight(event_type: str, section: FeedbackSection) -> float:
    return float(section.event_weights.get(event_type, section.default_weight))


def counter_updates(
    events: Iterable[Interaction],
    categories: Callable[[str, str], list[str]],
    section: FeedbackSection,
    keys: Callable[[str], Keys],
) -> dict[str, dict[str, float]]:
    """Sorted-set key → {item: log-space increment}, merged per key with log-add-exp."""
    out: dict[str, dict[str, float]] = {}

    def add(key: str, item: str, x: float) -> None:
        d = out.setdefault(key, {})
        d[item] = logaddexp(d.get(item), x)

    for e in events:
        w = event_weight(e.event_type, section)
        if w <= 0:
            continue
        k = keys(e.tenant)
        add(k.popularity(), e.item_id, log_weight(w, e.timestamp, section.popularity_half_life_s))
        cats = categories(e.tenant, e.item_id)
        for window, half_life in section.trending_windows.items():
            x = log_weight(w, e.timestamp, half_life)
            add(k.trending(window), e.item_id, x)
            for c in cats:
                add(k.trending(window, c), e.item_id, x)
    return out


def covisit_pairs(
    events: Sequence[Interaction],
    history: Sequence[tuple[str, float]],
    section: FeedbackSection,
) -> dict[tuple[str, str], int]:
    """Co-occurrences created by one actor's new events: (item, neighbour) → count (both directions).

    ``history``: (item, last ts) the actor touched before (from ``Keys.seen``). A new event
    with a positive weight pairs with the ``covisit_max_neighbors_per_event`` most recent
    distinct other items touched within ``covisit_window_s`` before or at its time (earlier
    events of the same batch included).
    """
    window_ms = section.covisit_window_s * 1000.0
    seen: dict[str, float] = {}
    for item, ts in history:
        seen[item] = max(ts, seen.get(item, float("-inf")))
    pairs: dict[tuple[str, str], int] = {}
    for e in sorted(events, key=lambda x: x.timestamp):
        if event_weight(e.event_type, section) > 0:
            near = [
                (ts, it) for it, ts in seen.items() if it != e.item_id and e.timestamp - window_ms <= ts <= e.timestamp
            ]
            near.sort(reverse=True)
            for _, it in near[: section.covisit_max_neighbors_per_event]:
                pairs[(e.item_id, it)] = pairs.get((e.item_id, it), 0) + 1
                pairs[(it, e.item_id)] = pairs.get((it, e.item_id), 0) + 1
        seen[e.item_id] = max(float(e.timestamp), seen.get(e.item_id, float("-inf")))
    return pairs


@dataclass
class Impression:
    """One served list as stored for attribution."""

    request_id: str
    tenant: str
    user: str
    model: str | None
    version: str | None
    variant: str
    ts: int
    ranks: dict[str, int]
    due: int | None = None  # wall-clock ms its attribution window closes (None: stored before it existed)

    def meta_json(self) -> bytes:
        return orjson.dumps({"user": self.user, "model": self.model, "version": self.version,
                             "variant": self.variant, "ts": self.ts, "due": self.due,
                             "items": [[i, r] for i, r in self.ranks.items()]})  # fmt: skip

    def closed(self, now: int) -> bool:
        return self.due is not None and now > self.due

    @classmethod
    def from_meta(cls, request_id: str, tenant: str, raw: bytes | str) -> Impression:
        d = orjson.loads(raw)
        due = d.get("due")
        return cls(request_id, tenant, d["user"], d.get("model"), d.get("version"), d.get("variant", "control"),
                   int(d.get("ts", 0)), {str(i): int(r) for i, r in d["items"]},
                   int(due) if due is not None else None)  # fmt: skip

    @classmethod
    def from_served(cls, ev: RecommendationServed, due: int | None = None) -> Impression:
        ranks: dict[str, int] = {}
        for it in ev.items:
            ranks.setdefault(it.item_id, it.rank)
        return cls(ev.request_id, ev.tenant, ev.user_id, ev.model_name, ev.model_version, ev.variant,
                   ev.timestamp, ranks, due)  # fmt: skip


@dataclass
class Engagement:
    """An interaction that may be attributed (possibly parked before its impression arrived)."""

    event_id: str
    item: str
    event_type: str
    ts: int

    def to_json(self) -> bytes:
        return orjson.dumps({"item": self.item, "type": self.event_type, "ts": self.ts})

    @classmethod
    def from_json(cls, event_id: str, raw: bytes | str) -> Engagement:
        d = orjson.loads(raw)
        return cls(event_id, str(d["item"]), str(d["type"]), int(d["ts"]))


@dataclass
class Attribution:
    """What joining engagements to one impression produced."""

    clicks: list[str] = field(default_factory=list)
    conversions: list[str] = field(default_factory=list)
    labels: list[LabeledInteraction] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)  # new hash fields set to "1"
    lags_s: list[float] = field(default_factory=list)


def make_label(imp: Impression, item: str, value: int, etype: str | None, ts: int) -> LabeledInteraction:
    """The labeled example of ``item`` in ``imp`` (deterministic id: request, item, label)."""
    return LabeledInteraction(
        label_id=label_id(imp.request_id, item, value), user_id=imp.user, item_id=item, tenant=imp.tenant,
        label=value, event_type=etype, request_id=imp.request_id, rank=imp.ranks[item],
        model_version=model_label(imp.model, imp.version) if imp.model or imp.version else None,
        variant=imp.variant, impression_ts=imp.ts, timestamp=ts,
    )  # fmt: skip


def timeout_negatives(imp: Impression, marks: set[str], ts: int) -> list[LabeledInteraction]:
    """Negatives of an impression whose window closed: every item, by rank, if nothing was clicked.

    An impression with a click already has its labels (the click, skip-above negatives); the items
    ranked below the click were maybe never looked at, so they get none. ``ts``: when the window closed.
    """
    if any(m.startswith("c:") for m in marks):
        return []
    by_rank = sorted(imp.ranks.items(), key=lambda kv: kv[1])
    return [make_label(imp, item, 0, None, ts) for item, _ in by_rank if f"n:{item}" not in marks]


def attribute(
    imp: Impression, marks: set[str], engagements: Sequence[Engagement], section: FeedbackSection
) -> Attribution:
    """Join engagements (any order) to ``imp``; ``marks`` are its existing hash fields (updated)."""
    out = Attribution()
    clicks, convs = set(section.click_types), set(section.conversion_types)
    by_rank = sorted(imp.ranks.items(), key=lambda kv: kv[1])

    def mark(f: str) -> None:
        marks.add(f)
        out.marks.append(f)

    def label(item: str, value: int, etype: str | None, ts: int) -> LabeledInteraction:
        return make_label(imp, item, value, etype, ts)

    for g in sorted(engagements, key=lambda x: (x.ts, x.event_id)):
        if g.item not in imp.ranks:
            continue
        engaged = g.event_type in clicks or g.event_type in convs
        if engaged and f"c:{g.item}" not in marks:
            mark(f"c:{g.item}")
            out.clicks.append(g.item)
            out.lags_s.append(max(0, g.ts - imp.ts) / 1000.0)
            out.labels.append(label(g.item, 1, g.event_type, g.ts))
            rank = imp.ranks[g.item]
            for other, r in by_rank:
                if r >= rank:
                    break
                if f"c:{other}" not in marks and f"n:{other}" not in marks:
                    mark(f"n:{other}")
                    out.labels.append(label(other, 0, None, g.ts))
        if g.event_type in convs and f"v:{g.item}" not in marks:
            mark(f"v:{g.item}")
            out.conversions.append(g.item)
    return out


class MetaCache:
    """Item categories read from ``Keys.item_meta``, cached in process for ``ttl_s``."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._d: dict[tuple[str, str], tuple[list[str], float]] = {}

    def get(self, tenant: str, item: str) -> list[str] | None:
        hit = self._d.get((tenant, item))
        return hit[0] if hit is not None and hit[1] > time.monotonic() else None

    def put(self, tenant: str, item: str, cats: list[str]) -> None:
        if len(self._d) > 200_000:
            self._d.clear()
        self._d[(tenant, item)] = (cats, time.monotonic() + self.ttl_s)

    def forget(self, tenant: str, item: str) -> None:
        self._d.pop((tenant, item), None)


# ------------------------------------------------------------------------------- I/O handler
class FeedbackHandler:
    """Batch handlers of the feedback consumer (interactions, served recommendations, catalog)."""

    def __init__(
        self,
        client: Any,
        redis_settings: RedisSettings,
        section: FeedbackSection,
        tenant: str,
        producer: EventProducer | None = None,
    ) -> None:
        self.r = client
        self.rs = redis_settings
        self.s = section
        self.tenant = tenant
        self.keys = Keys(tenant)
        self._keys: dict[str, Keys] = {tenant: self.keys}
        self.producer = producer
        self.meta = MetaCache(section.item_meta_cache_s)
        self.dedupe = Deduper(client, CONSUMER, redis_settings.dedupe_ttl_s, self.keys)
        self.dedupe_served = Deduper(client, CONSUMER_SERVED, redis_settings.dedupe_ttl_s, self.keys)
        self.window_s = section.attribution_window_s or redis_settings.impression_ttl_s
        # with timeout negatives, an impression outlives its window by the sweep delay and one more
        # window, so a sweep that was down a while still finds what it must label
        self.sweeping = section.timeout_negatives and section.emit_labels
        self.impression_ttl_s = (
            2 * self.window_s + int(section.negatives_delay_s) + 1 if self.sweeping else self.window_s
        )
        self.engage_types = set(section.click_types) | set(section.conversion_types)

    def k(self, tenant: str) -> Keys:
        k = self._keys.get(tenant)
        if k is None:
            k = self._keys[tenant] = Keys(tenant)
        return k

    # -- interactions: the seen-items fast lane ----------------------------------------------
    def handle_seen(self, records: list[Record[Interaction]]) -> None:
        """Only ``Keys.seen`` (scoring's exclude_seen), in a consumer group of its own.

        ``ZADD GT`` of the event time is idempotent by construction (a replay writes the same
        maximum), so this lane needs no dedupe round trips and never waits behind the heavier
        counters when they lag: one pipelined write per batch.
        """
        by_actor: dict[tuple[str, str], dict[str, int]] = {}
        newest = 0
        for r in records:
            e = r.value
            if e is None:
                continue
            a = actor_id(e.user_id, e.session_id, e.context)
            if a is None:
                continue
            latest = by_actor.setdefault((e.tenant, a), {})
            latest[e.item_id] = max(e.timestamp, latest.get(e.item_id, 0))
            newest = max(newest, e.timestamp)
        if not by_actor:
            return
        pipe = self.r.pipeline(transaction=False)
        self._write_seen(pipe, by_actor)
        pipe.execute()
        SEEN_LAG.observe(max(0, now_ms() - newest) / 1000.0)

    def _write_seen(self, p: Any, by_actor: dict[tuple[str, str], dict[str, int]]) -> None:
        for (t, a), latest in by_actor.items():
            sk = self.k(t).seen(a)
            p.zadd(sk, latest, gt=True)
            p.zremrangebyrank(sk, 0, -(self.rs.seen_max + 1))
            p.expire(sk, self.rs.seen_ttl_s)

    # -- interactions ------------------------------------------------------------------------
    def handle_interactions(self, records: list[Record[Interaction]]) -> None:
        events = [r.value for r in records if r.value is not None]
        if not events:
            return
        flags = self.dedupe.unseen([(e.event_id, e.tenant) for e in events])
        fresh = [e for e, new in zip(events, flags, strict=True) if new]
        DUPLICATES.labels("interactions").inc(len(events) - len(fresh))
        if not fresh:
            return
        by_actor: dict[tuple[str, str], list[Interaction]] = {}
        for e in fresh:
            a = actor_id(e.user_id, e.session_id, e.context)
            if a is not None:
                by_actor.setdefault((e.tenant, a), []).append(e)

        # one pipelined read: co-visitation history, impressions to join, uncached categories
        win_ms = int(self.s.covisit_window_s * 1000)
        pipe = self.r.pipeline(transaction=False)
        actors = list(by_actor)
        for tenant, a in actors:
            lo = min(e.timestamp for e in by_actor[(tenant, a)]) - win_ms
            n = self.s.covisit_max_neighbors_per_event + len(by_actor[(tenant, a)])
            pipe.zrevrangebyscore(self.k(tenant).covisit_history(a), "+inf", lo, start=0, num=n, withscores=True)
        engaged = [(t, a, e) for (t, a), evs in by_actor.items() for e in evs if e.event_type in self.engage_types]
        for t, a, e in engaged:
            k = self.k(t)
            if e.request_id:
                pipe.hgetall(k.impression(e.request_id))
            else:
                pipe.get(k.last_impression(a, e.item_id))
        missing = sorted({(e.tenant, e.item_id) for e in fresh if self.meta.get(e.tenant, e.item_id) is None})
        for t, item in missing:
            pipe.hget(self.k(t).item_meta(item), "categories")
        res = pipe.execute()
        histories = [[(m.decode(), s) for m, s in res[i]] for i in range(len(actors))]
        joined = res[len(actors) : len(actors) + len(engaged)]
        for (t, item), raw in zip(missing, res[len(actors) + len(engaged) :], strict=True):
            self.meta.put(t, item, parse_categories(raw))

        # resolve request ids found through last_impression (a second read, only when needed)
        rids: list[str | None] = []
        hashes: dict[tuple[str, str], dict[bytes, bytes]] = {}
        lookups: list[tuple[str, str]] = []
        for (t, _a, e), got in zip(engaged, joined, strict=True):
            if e.request_id:
                rids.append(e.request_id)
                hashes[(t, e.request_id)] = got or {}
            elif got:
                rid = got.decode()
                rids.append(rid)
                if (t, rid) not in hashes:
                    lookups.append((t, rid))
                    hashes[(t, rid)] = {}
            else:
                rids.append(None)
        if lookups:
            pipe = self.r.pipeline(transaction=False)
            for t, rid in lookups:
                pipe.hgetall(self.k(t).impression(rid))
            for (t, rid), h in zip(lookups, pipe.execute(), strict=True):
                hashes[(t, rid)] = h or {}

        # compute
        zsets = counter_updates(fresh, lambda t, i: self.meta.get(t, i) or [], self.s, self.k)
        pairs: dict[tuple[str, str, str], int] = {}
        for (t, a), hist in zip(actors, histories, strict=True):
            for (x, y), c in covisit_pairs(by_actor[(t, a)], hist, self.s).items():
                pairs[(t, x, y)] = pairs.get((t, x, y), 0) + c
        per_imp: dict[tuple[str, str], list[Engagement]] = {}
        for (t, _a, e), rid in zip(engaged, rids, strict=True):
            if rid is not None:
                per_imp.setdefault((t, rid), []).append(Engagement(e.event_id, e.item_id, e.event_type, e.timestamp))
        results: list[tuple[Impression, Attribution]] = []
        parked: list[tuple[str, str, Engagement]] = []
        now = now_ms()
        for (t, rid), gs in per_imp.items():
            h = hashes.get((t, rid)) or {}
            meta = h.get(b"meta")
            if meta is None:
                parked.extend((t, rid, g) for g in gs)  # the impression has not arrived (yet)
                continue
            imp = Impression.from_meta(rid, t, meta)
            if imp.closed(now):  # its window closed (the hash outlives it for the negatives sweep)
                LATE.inc(len(gs))
                continue
            marks = {f.decode() for f in h if f != b"meta"}
            results.append((imp, attribute(imp, marks, gs, self.s)))

        self._emit([lab for _, att in results for lab in att.labels])

        def write(p: Any, new_flags: list[bool]) -> None:
            if not all(new_flags):
                raise _Raced("events counted by another consumer meanwhile")
            self._write_interactions(p, by_actor, zsets, pairs, results, parked)

        ids = [(e.event_id, e.tenant) for e in fresh]
        self.dedupe.apply(ids, write)
        for e in fresh:
            EVENTS.labels(e.event_type).inc()
        self._observe(results)

    def _write_interactions(
        self,
        p: Any,
        by_actor: dict[tuple[str, str], list[Interaction]],
        zsets: dict[str, dict[str, float]],
        pairs: dict[tuple[str, str, str], int],
        results: list[tuple[Impression, Attribution]],
        parked: list[tuple[str, str, Engagement]],
    ) -> None:
        rs = self.rs
        latest: dict[tuple[str, str], dict[str, int]] = {}
        for key, evs in by_actor.items():
            d = latest.setdefault(key, {})
            for e in evs:
                d[e.item_id] = max(e.timestamp, d.get(e.item_id, 0))
        # seen here too (idempotent): it stays fresh while the fast lane restarts
        self._write_seen(p, latest)
        # the co-visitation history: this lane's own, so pairs never depend on the fast lane's progress
        keep = self.s.covisit_max_neighbors_per_event + 1
        for (t, a), items in latest.items():
            hk = self.k(t).covisit_history(a)
            p.zadd(hk, items, gt=True)
            p.zremrangebyrank(hk, 0, -(keep + 1))
            p.expire(hk, rs.counters_ttl_s)
        if zsets:
            zkeys = list(zsets)
            args: list[Any] = [self.s.counters_max_items, rs.counters_ttl_s]
            for n, key in enumerate(zkeys, start=1):
                for item, x in zsets[key].items():
                    args += [n, item, repr(x)]
            # EVAL, not EVALSHA: no SCRIPT EXISTS round trip, and never a NOSCRIPT failing inside EXEC
            p.eval(LOGADDEXP_ZSET_LUA, len(zkeys), *zkeys, *args)
        touched: set[str] = set()
        for (t, x, y), c in pairs.items():
            ck = self.k(t).covisit(x)
            p.zincrby(ck, c, y)
            touched.add(ck)
        for ck in touched:
            p.zremrangebyrank(ck, 0, -(self.s.covisit_keep + 1))
            p.expire(ck, rs.counters_ttl_s)
        for imp, att in results:
            self._write_attribution(p, imp, att)
        for t, rid, g in parked:
            ik = self.k(t).impression(rid)
            p.hset(ik, f"p:{g.event_id}", g.to_json())
            p.expire(ik, self.window_s)

    def _write_attribution(self, p: Any, imp: Impression, att: Attribution) -> None:
        k = self.k(imp.tenant)
        ik = k.impression(imp.request_id)
        if att.marks:
            p.hset(ik, mapping=dict.fromkeys(att.marks, b"1"))
        mv = model_label(imp.model, imp.version)
        for field_name, items in (("clicks", att.clicks), ("conversions", att.conversions)):
            for item in items:
                for dim, val in (("item", item), ("variant", imp.variant), ("model", mv),
                                 ("vm", f"{imp.variant}|{mv}")):  # fmt: skip
                    p.hincrby(k.ctr(dim, val), field_name, 1)
                    p.expire(k.ctr(dim, val), self.rs.counters_ttl_s)

    def _emit(self, labels: list[LabeledInteraction]) -> None:
        if not labels or not self.s.emit_labels or self.producer is None:
            return
        for lab in labels:
            self.producer.send(FEEDBACK_LABELED, lab)
        left = self.producer.flush(10)
        if left:
            raise TransientError(f"{left} labels not acknowledged by the broker")
        for lab in labels:
            LABELS.labels(str(lab.label)).inc()

    def _observe(
        self, results: list[tuple[Impression, Attribution]], touched: set[tuple[str, str, str]] | None = None
    ) -> None:
        touched = set(touched or ())
        for imp, att in results:
            mv = model_label(imp.model, imp.version)
            if att.clicks:
                CLICKS.labels(imp.variant, mv).inc(len(att.clicks))
            if att.conversions:
                CONVERSIONS.labels(imp.variant, mv).inc(len(att.conversions))
            for lag in att.lags_s:
                ATTRIBUTION_LAG.observe(lag)
            if att.clicks or att.conversions:
                touched.add((imp.tenant, imp.variant, mv))
        self._refresh_rates(touched)

    def _refresh_rates(self, touched: set[tuple[str, str, str]]) -> None:
        """CTR / conversion gauges from the shared Redis totals (correct across replicas)."""
        if not touched:
            return
        order = sorted(touched)
        pipe = self.r.pipeline(transaction=False)
        for t, variant, mv in order:
            pipe.hgetall(self.k(t).ctr("vm", f"{variant}|{mv}"))
        for (_t, variant, mv), h in zip(order, pipe.execute(), strict=True):
            imps = int(h.get(b"impressions", 0))
            if imps:
                CTR.labels(variant, mv).set(int(h.get(b"clicks", 0)) / imps)
                CONVERSION_RATE.labels(variant, mv).set(int(h.get(b"conversions", 0)) / imps)

    # -- served recommendations (impressions) ------------------------------------------------
    def handle_served(self, records: list[Record[RecommendationServed]]) -> None:
        events = [r.value for r in records if r.value is not None and r.value.items]
        if not events:
            return
        flags = self.dedupe_served.unseen([(e.request_id, e.tenant) for e in events])
        fresh = [e for e, new in zip(events, flags, strict=True) if new]
        DUPLICATES.labels("served").inc(len(events) - len(fresh))
        if not fresh:
            return
        pipe = self.r.pipeline(transaction=False)
        for e in fresh:
            pipe.hgetall(self.k(e.tenant).impression(e.request_id))
        existing = pipe.execute()
        plans: list[tuple[Impression, Attribution]] = []
        due = now_ms() + self.window_s * 1000
        for e, h in zip(fresh, existing, strict=True):
            imp = Impression.from_served(e, due)
            h = h or {}
            marks = {f.decode() for f in h if not f.startswith(b"p:") and f != b"meta"}
            pending = [Engagement.from_json(f.decode()[2:], v) for f, v in h.items() if f.startswith(b"p:")]
            plans.append((imp, attribute(imp, marks, pending, self.s)))
        self._emit([lab for _, att in plans for lab in att.labels])

        def write(p: Any, new_flags: list[bool]) -> None:
            if not all(new_flags):
                raise _Raced("impressions stored by another consumer meanwhile")
            for (imp, att), h in zip(plans, existing, strict=True):
                k = self.k(imp.tenant)
                ik = k.impression(imp.request_id)
                p.hset(ik, "meta", imp.meta_json())
                parked = [f for f in (h or {}) if f.startswith(b"p:")]
                if parked:
                    p.hdel(ik, *parked)
                p.expire(ik, self.impression_ttl_s)
                if self.sweeping:
                    p.zadd(self.keys.impressions_due(), {orjson.dumps([imp.tenant, imp.request_id]): due}, nx=True)
                mv = model_label(imp.model, imp.version)
                n = len(imp.ranks)
                for item in imp.ranks:
                    p.set(k.last_impression(imp.user, item), imp.request_id, ex=self.window_s)
                    p.hincrby(k.ctr("item", item), "impressions", 1)
                    p.expire(k.ctr("item", item), self.rs.counters_ttl_s)
                for dim, val in (("variant", imp.variant), ("model", mv), ("vm", f"{imp.variant}|{mv}")):
                    p.hincrby(k.ctr(dim, val), "impressions", n)
                    p.expire(k.ctr(dim, val), self.rs.counters_ttl_s)
                self._write_attribution(p, imp, att)
            if self.sweeping:
                p.expire(self.keys.impressions_due(), self.impression_ttl_s)

        self.dedupe_served.apply([(e.request_id, e.tenant) for e in fresh], write)
        for imp, _ in plans:
            IMPRESSIONS.labels(imp.variant, model_label(imp.model, imp.version)).inc(len(imp.ranks))
        self._observe(plans, {(imp.tenant, imp.variant, model_label(imp.model, imp.version)) for imp, _ in plans})

    # -- timeout negatives --------------------------------------------------------------------
    def sweep(self, now: int | None = None) -> int:
        """One round: claim impressions whose window closed ``negatives_delay_s`` ago, emit the negatives
        of those nobody clicked (:func:`timeout_negatives`), then drop their entry and hash. Returns the
        number of impressions claimed (``sweep_batch``: maybe more are due).

        The claim is atomic (:data:`CLAIM_DUE_LUA`), so concurrent sweeps (replicas) never share an
        impression. A failure after it (broker unreachable, crash) leaves the claimed entries leased:
        they are swept again when the lease ends, and labels emitted twice carry the same ids.
        """
        if not self.sweeping or self.producer is None:
            return 0
        now = now_ms() if now is None else now
        dk = self.keys.impressions_due()
        upto = now - int(self.s.negatives_delay_s * 1000)
        claimed = self.r.eval(CLAIM_DUE_LUA, 1, dk, upto, now + int(CLAIM_LEASE_S * 1000), self.s.sweep_batch)
        if not claimed:
            return 0
        refs = [(str(t), str(rid)) for t, rid in (orjson.loads(m) for m in claimed)]
        pipe = self.r.pipeline(transaction=False)
        for t, rid in refs:
            pipe.hgetall(self.k(t).impression(rid))
        labels: list[LabeledInteraction] = []
        outcomes = {"clicked": 0, "unclicked": 0, "gone": 0}
        for (t, rid), h in zip(refs, pipe.execute(), strict=True):
            meta = (h or {}).get(b"meta")
            if meta is None:  # expired before any sweep ran (the sweep was down for over a window)
                outcomes["gone"] += 1
                continue
            imp = Impression.from_meta(rid, t, meta)
            negatives = timeout_negatives(imp, {f.decode() for f in h if f != b"meta"}, imp.due or upto)
            outcomes["unclicked" if negatives else "clicked"] += 1
            labels.extend(negatives)
        self._emit(labels)
        with self.r.pipeline(transaction=True) as p:
            p.zrem(dk, *claimed)
            for t, rid in refs:
                p.delete(self.k(t).impression(rid))
            p.execute()
        for outcome, n in outcomes.items():
            if n:
                CLOSED.labels(outcome).inc(n)
        return len(claimed)

    # -- catalog ------------------------------------------------------------------------------
    def handle_catalog(self, records: list[Record[ItemUpdate]]) -> None:
        """Item metadata (categories for per-category trending); last write wins, so replays are exact."""
        pipe = self.r.pipeline(transaction=False)
        for r in records:
            ev = r.value
            if ev is None:
                if r.key is not None:  # tombstone: the key names the tenant (bare id: the default one)
                    t, item = parse_catalog_key(r.key, self.tenant)
                    pipe.delete(self.k(t).item_meta(item))
                    self.meta.forget(t, item)
                continue
            k = self.k(ev.tenant)
            pipe.hset(k.item_meta(ev.item_id), mapping={
                "title": ev.title or "", "categories": encode_categories(ev.categories),
                "available": "1" if ev.available else "0", "updated_at": str(ev.updated_at),
            })  # fmt: skip
            self.meta.put(ev.tenant, ev.item_id, list(ev.categories))
        pipe.execute()
