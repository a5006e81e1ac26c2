"""The promotion gate, promotion and rollback (with their ``models.published.v1`` events).

A candidate becomes champion only when its gate metric on a split beats the current champion's
on the **same split** by a relative margin: the champion is re-evaluated on that split (its
catalog aligned to the split's items), never compared through metrics it recorded on an older
split. Everything else stays a challenger. Promotion and rollback move the registry's champion
pointer and then publish a :class:`~recmesh.core.events.ModelPublished` event, which scoring and
personalization hot-swap on; when the publish fails the pointer is moved back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recmesh.core.artifacts import ModelArtifact
from recmesh.core.events import ModelPublished, now_ms
from recmesh.core.metrics import Counter
from recmesh.core.registry import Registry, VersionInfo

from .dataset import Split
from .evaluation.evaluator import EvalConfig, evaluate

log = logging.getLogger(__name__)

PROMOTIONS = Counter(
    "recmesh_training_promotions_total", "Champion changes by action (promote, rollback).", ["model", "action"]
)
GATE_DECISIONS = Counter(
    "recmesh_training_gate_decisions_total", "Gate outcomes (promoted, refused).", ["model", "outcome"]
)

Publisher = Callable[[ModelPublished], None]


@dataclass(frozen=True)
class GateConfig:
    """How a candidate must beat the champion."""

    metric: str = "ndcg@10"
    margin: float = 0.01  # relative: candidate > champion × (1 + margin)
    min_value: float = 0.0  # a first version must at least reach this


@dataclass
class GateDecision:
    """The outcome of one gate check (recorded in the version's note and metrics)."""

    promote: bool
    reason: str
    metric: str
    candidate: float
    champion: float | None = None
    champion_version: str | None = None
    champion_metrics: dict[str, float] = field(default_factory=dict)


def decide(
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    cfg: GateConfig,
    champion_version: str | None = None,
) -> GateDecision:
    """Pure gate logic over two metric dictionaries computed on the same split."""
    if cfg.metric not in candidate:
        raise KeyError(f"gate metric {cfg.metric!r} missing from the candidate's metrics")
    cand = float(candidate[cfg.metric])
    if not np.isfinite(cand):
        return GateDecision(False, f"{cfg.metric} is not finite", cfg.metric, cand)
    if champion is None:
        ok = cand >= cfg.min_value
        why = "no champion yet" if ok else f"{cfg.metric} {cand:.4f} below the minimum {cfg.min_value:.4f}"
        return GateDecision(ok, why, cfg.metric, cand)
    champ = float(champion.get(cfg.metric, float("-inf")))
    bar = champ * (1.0 + cfg.margin) if champ > 0 else champ + cfg.margin * 1e-3
    ok = cand > bar
    rel = (cand / champ - 1.0) * 100 if champ > 0 else float("inf")
    why = (
        f"{cfg.metric} {cand:.4f} vs champion {champion_version} {champ:.4f} "
        f"({rel:+.1f}%, needs > {cfg.margin * 100:+.1f}%)"
    )
    return GateDecision(ok, why, cfg.metric, cand, champ, champion_version, dict(champion))


# --------------------------------------------------------------------------- catalog alignment
def align_artifact(art: ModelArtifact, item_ids: list[str] | np.ndarray) -> ModelArtifact:
    """The same model over another catalog order: items it never saw score as empty rows.

    Needed to evaluate a champion (trained on older data) on a new split, whose id maps differ.
    """
    ids = [str(i) for i in item_ids]
    if ids == art.item_ids:
        return art
    index = art.item_index
    src = np.array([index.get(i, -1) for i in ids], dtype=np.int64)
    known = src >= 0
    dst = np.flatnonzero(known)
    n = len(ids)
    pop = np.zeros(n, dtype=np.float32)
    pop[known] = art.popularity[src[known]]
    arrays: dict[str, Any] = {}
    if art.item_vectors is not None:
        iv = np.zeros((n, art.item_vectors.shape[1]), dtype=np.float32)
        iv[known] = art.item_vectors[src[known]]
        arrays["item_vectors"] = iv
    if art.item_item is not None:
        m = np.zeros((n, n), dtype=np.float32)
        m[np.ix_(dst, dst)] = art.item_item[np.ix_(src[known], src[known])]
        arrays["item_item"] = m
    if art.neighbors is not None and art.neighbor_scores is not None:
        new_of_old = np.full(art.n_items, -1, dtype=np.int64)
        new_of_old[src[known]] = dst
        nb = np.full((n, art.neighbors.shape[1]), -1, dtype=np.int32)
        sc = np.zeros((n, art.neighbors.shape[1]), dtype=np.float32)
        old = art.neighbors[src[known]].astype(np.int64)
        mapped = np.where(old >= 0, new_of_old[np.maximum(old, 0)], -1)
        nb[dst] = mapped
        sc[dst] = np.where(mapped >= 0, art.neighbor_scores[src[known]], 0.0)
        arrays["neighbors"], arrays["neighbor_scores"] = nb, sc
    extra_fields = {"blobs": dict(art.blobs)} if hasattr(art, "blobs") else {}
    return ModelArtifact(
        name=art.name, kind=art.kind, item_ids=ids, popularity=pop, params=dict(art.params),
        metrics=dict(art.metrics), encoder=dict(art.encoder), created_at=art.created_at,
        data_range=dict(art.data_range), dataset_hash=art.dataset_hash, code_version=art.code_version,
        extra=dict(art.extra), **arrays, **extra_fields,
    )  # fmt: skip


def evaluate_on(art: ModelArtifact, split: Split, eval_cfg: EvalConfig | None = None) -> dict[str, float]:
    """Metrics of any artifact on ``split`` (aligned to the split's catalog first)."""
    return dict(evaluate(align_artifact(art, split.train.item_ids), split, eval_cfg).metrics)


def champion_metrics(
    registry: Registry, name: str, split: Split, eval_cfg: EvalConfig | None = None
) -> tuple[VersionInfo, dict[str, float]] | None:
    """The current champion re-evaluated on ``split``; None when there is no champion."""
    champ = registry.champion(name)
    if champ is None:
        return None
    art = ModelArtifact.load(champ.uri)
    return champ, evaluate_on(art, split, eval_cfg)


# --------------------------------------------------------------------------- publishing
def published_event(info: VersionInfo, action: str, previous: str | None) -> ModelPublished:
    """The ``models.published.v1`` event for a new champion."""
    return ModelPublished(
        name=info.name,
        version=info.version,
        artifact_uri=info.uri,
        kind=info.kind,
        action=action,
        previous_version=previous,
        metrics={k: float(v) for k, v in info.metrics.items() if isinstance(v, int | float)},
        created_at=info.created_at,
        data_start=info.data_start,
        data_end=info.data_end,
        published_at=now_ms(),
    )


def kafka_publisher(settings: Any) -> tuple[Publisher, Callable[[], None]]:
    """A publisher on ``models.published.v1`` that waits for the broker's ack, and its closer."""
    from recmesh.core.bus import EventProducer
    from recmesh.core.errors import Unavailable
    from recmesh.core.topics import MODELS_PUBLISHED, TopicRegistry

    producer = EventProducer(
        settings.kafka,
        TopicRegistry(prefix=settings.kafka.topic_prefix),
        client_id="training-publisher",
        schema_registry_url=settings.schema_registry_url,
    )

    def publish(event: ModelPublished) -> None:
        errors: list[str] = []
        producer.send(MODELS_PUBLISHED, event, on_delivery=lambda err, _m: errors.append(str(err)) if err else None)
        if producer.flush(30) or errors:
            raise Unavailable(f"models.published.v1 not acknowledged: {errors or 'timeout'}")

    return publish, lambda: producer.close(10)


def _snapshot(registry: Registry, name: str, versions: list[str | None]) -> tuple[dict[str, Any], list[VersionInfo]]:
    """The champion pointer and the records of ``versions`` before a champion change."""
    infos = [info for v in dict.fromkeys(versions) if v and (info := registry.get(name, v)) is not None]
    return registry.state(name), infos


def _restore(registry: Registry, name: str, snap: tuple[dict[str, Any], list[VersionInfo]]) -> None:
    """Put the pointer (first: it is what readers follow) and the version statuses back."""
    state, infos = snap
    registry.restore_state(name, state)
    for info in infos:
        registry.register(info)


def _publish_or_restore(registry: Registry, name: str, event: ModelPublished, publisher: Publisher | None,
                        snap: tuple[dict[str, Any], list[VersionInfo]]) -> None:  # fmt: skip
    """Publish ``event``; when that fails, the champion change is undone before the error propagates.

    Without this a broker that does not acknowledge leaves the registry pointing at a champion
    that scoring and personalization never heard of (they hot-swap on the event, not the pointer).
    """
    if publisher is None:
        return
    try:
        publisher(event)
    except BaseException:
        log.error("publish failed, champion change undone",
                  extra={"model": name, "version": event.version, "restored": snap[0].get("champion")})  # fmt: skip
        _restore(registry, name, snap)
        raise


def promote(registry: Registry, name: str, version: str, publisher: Publisher | None,
            action: str = "promote") -> ModelPublished:  # fmt: skip
    """Make ``version`` champion and publish it. Returns the published event.

    All or nothing: if the publisher raises, the previous champion pointer (and version
    statuses) are restored and the error is re-raised.
    """
    snap = _snapshot(registry, name, [registry.state(name).get("champion"), version])
    previous = registry.set_champion(name, version)
    info = registry.get(name, version)
    assert info is not None
    event = published_event(info, action, previous)
    _publish_or_restore(registry, name, event, publisher, snap)
    PROMOTIONS.labels(name, action).inc()
    log.info("champion changed", extra={"model": name, "version": version, "previous": previous, "action": action})
    return event


def rollback(registry: Registry, name: str, publisher: Publisher | None) -> ModelPublished:
    """Restore the previous champion and publish it (``action='rollback'``).

    All or nothing, like :func:`promote`: a failed publish leaves the demoted champion in place.
    """
    history = list(registry.state(name).get("history", []))
    snap = _snapshot(registry, name, history[-2:])
    restored, demoted = registry.rollback(name)
    info = registry.get(name, restored)
    assert info is not None
    event = published_event(info, "rollback", demoted)
    _publish_or_restore(registry, name, event, publisher, snap)
    PROMOTIONS.labels(name, "rollback").inc()
    log.info("rolled back", extra={"model": name, "restored": restored, "demoted": demoted})
    return event


def record_decision(info: VersionInfo, decision: GateDecision) -> VersionInfo:
    """The version record with the gate's outcome in its note and the champion's score in metrics."""
    metrics = dict(info.metrics)
    if decision.champion is not None:
        metrics[f"champion_{decision.metric}"] = decision.champion
    return replace(info, metrics=metrics, note=("promoted: " if decision.promote else "refused: ") + decision.reason)
