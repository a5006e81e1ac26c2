"""One training run: data → split → (tune) → fit → evaluate → register → gate → publish.

Data comes from the Parquet lake for a time range (or an interaction file). The model is fit on
the training part of the split and evaluated once on the held-out part, over a seeded sample
of at most ``eval_max_users`` test users (full ranking, so the cost stays bounded on large data).
The artifact is written to ``Registry.version_uri`` (atomically: temp directory, then rename)
and only then registered with params, metrics, data range, dataset hash and code version. The
gate re-evaluates the champion on the same sampled split; the new version is promoted (and
``models.published.v1`` published) only when it wins by the margin, else it stays a challenger.

Failure: any error before registration removes what was written and registers nothing; the
champion pointer is only touched by the final promotion step.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from recmesh.core.artifacts import ModelArtifact
from recmesh.core.metrics import Gauge, Histogram
from recmesh.core.registry import Registry, VersionInfo, new_version

from .dataset import Dataset, FilterConfig, WeightConfig, load_interactions, split_dataset
from .evaluation.evaluator import EvalConfig, evaluate
from .gate import (
    GATE_DECISIONS,
    GateConfig,
    GateDecision,
    Publisher,
    champion_metrics,
    decide,
    promote,
    record_decision,
)
from .lake import TRAINING_COLUMNS, read_lake_detailed, training_frame
from .models import fit_model, make_config
from .models.base import code_version
from .tuning import TuneResult, sample_split, tune, write_report

log = logging.getLogger(__name__)

FIT_SECONDS = Histogram(
    "recmesh_training_fit_seconds", "Seconds to fit a model.", ["model"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)  # fmt: skip
RUN_SECONDS = Gauge("recmesh_training_last_run_seconds", "Seconds of the last training run.", ["model"])
LAST_METRIC = Gauge("recmesh_training_last_metric", "Test metrics of the last trained version.", ["model", "metric"])
LAST_RUN_TS = Gauge("recmesh_training_last_run_timestamp", "Epoch seconds of the last run by outcome.",
                    ["model", "outcome"])  # fmt: skip


class TrainingError(RuntimeError):
    """A run failed; nothing was registered and the champion is unchanged."""


@dataclass
class TrainRequest:
    """What to train and how (the CLI and the scheduler build one)."""

    model: str
    params: dict[str, Any] = field(default_factory=dict)
    lake_uri: str | None = None
    interactions: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    split: str = "per-user-temporal:0.2"
    seed: int = 42
    tune_trials: int = 0
    tune_minutes: float | None = None
    promote: bool = True
    gate: GateConfig = field(default_factory=GateConfig)
    eval_max_users: int | None = 5000
    eval_ks: tuple[int, ...] = (10, 20)
    min_interactions: int = 10
    weights: WeightConfig | None = None
    filters: FilterConfig | None = None


@dataclass
class TrainResult:
    """What a run did."""

    version: str
    info: VersionInfo
    metrics: dict[str, float]
    decision: GateDecision | None
    promoted: bool
    timings: dict[str, float]
    tuning: TuneResult | None = None
    published: Any = None


def load_frame(req: TrainRequest) -> tuple[Any, dict[str, Any]]:
    """Normalised interaction frame for the request and notes about the read (lake skips)."""
    notes: dict[str, Any] = {}
    if req.lake_uri:
        res = read_lake_detailed(req.lake_uri, req.start_ms, req.end_ms, columns=TRAINING_COLUMNS)
        notes = {"lake_files": res.files, "corrupt_files": res.corrupt, "duplicates_dropped": res.duplicates}
        if res.frame.empty:
            raise TrainingError(f"no interactions in the lake {req.lake_uri} for the requested range")
        return training_frame(res.frame), notes
    if req.interactions:
        frame = load_interactions(req.interactions)
        ts = frame["timestamp"]
        keep = (ts >= (req.start_ms or ts.min())) & (ts < (req.end_ms if req.end_ms is not None else ts.max() + 1))
        return frame[keep].reset_index(drop=True), notes
    raise TrainingError("a training run needs a lake URI or an interactions file")


def _remove(uri: str) -> None:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    try:
        if fs.exists(path):
            fs.rm(path, recursive=True)
    except OSError:
        log.warning("could not remove a half-written version", extra={"uri": uri}, exc_info=True)


def run_training(req: TrainRequest, registry: Registry, publisher: Publisher | None = None) -> TrainResult:
    """Train, register and gate one version (see module docstring)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - t0, 4)
        return now

    make_config(req.model, req.params)  # fail fast on a bad model name or params
    t = time.perf_counter()
    frame, notes = load_frame(req)
    if len(frame) < req.min_interactions:
        raise TrainingError(f"only {len(frame)} interactions (need {req.min_interactions})")
    t = lap("read", t)
    ds = Dataset.from_frame(frame, req.weights, req.filters)
    split = split_dataset(ds, req.split, seed=req.seed)
    eval_split = sample_split(split, req.eval_max_users, req.seed)
    t = lap("dataset", t)

    tuned: TuneResult | None = None
    params = {"seed": req.seed, **req.params}
    if req.tune_trials or req.tune_minutes:
        tuned = tune(req.model, split.train, n_trials=req.tune_trials or None, minutes=req.tune_minutes,
                     seed=req.seed, metric=req.gate.metric, base_params=params,
                     eval_max_users=min(req.eval_max_users or 2000, 2000))  # fmt: skip
        params = tuned.best_params
        t = lap("tune", t)

    artifact = fit_model(req.model, split.train, params)
    FIT_SECONDS.labels(req.model).observe(time.perf_counter() - t)
    t = lap("fit", t)
    ks = tuple(sorted({*req.eval_ks, int(req.gate.metric.split("@")[1]) if "@" in req.gate.metric else 10}))
    eval_cfg = EvalConfig(ks=ks)
    result = evaluate(artifact, eval_split, eval_cfg)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics["fit_seconds"] = timings["fit"]
    metrics["eval_users"] = float(result.n_users)
    t = lap("evaluate", t)

    version = new_version()
    uri = registry.version_uri(req.model, version)
    artifact.metrics = {**artifact.metrics, **metrics}
    artifact.code_version = artifact.code_version or code_version()
    dr = ds.data_range()
    artifact.data_range = {**dr, "split": split.description, "start_ms": req.start_ms, "end_ms": req.end_ms,
                           "eval": eval_split.description, **notes}  # fmt: skip
    try:
        artifact.save(uri)
        if tuned is not None:
            write_report(tuned, uri.rstrip("/") + "/tuning.html")
        info = VersionInfo(
            name=req.model, version=version, uri=uri, status="challenger", kind=artifact.kind,
            metrics=metrics, params=dict(artifact.params), created_at=int(artifact.created_at),
            data_start=dr["min_timestamp"], data_end=dr["max_timestamp"], dataset_hash=artifact.dataset_hash,
            code_version=artifact.code_version, split=eval_split.description,
        )  # fmt: skip
        registry.register(info)
    except BaseException:
        _remove(uri)
        LAST_RUN_TS.labels(req.model, "failed").set(time.time())
        raise
    t = lap("register", t)
    for name in ks:
        LAST_METRIC.labels(req.model, f"ndcg@{name}").set(metrics.get(f"ndcg@{name}", 0.0))
        LAST_METRIC.labels(req.model, f"recall@{name}").set(metrics.get(f"recall@{name}", 0.0))

    decision: GateDecision | None = None
    published = None
    if req.promote:
        try:
            champ = champion_metrics(registry, req.model, eval_split, eval_cfg)
            decision = decide(metrics, champ[1] if champ else None, req.gate, champ[0].version if champ else None)
        except Exception as exc:  # an unreadable champion is an operator problem, not a promotion
            log.error("champion could not be evaluated", extra={"model": req.model, "error": repr(exc)})
            decision = GateDecision(False, f"champion could not be evaluated: {exc!r}"[:300], req.gate.metric,
                                    metrics.get(req.gate.metric, 0.0))  # fmt: skip
        info = registry.register(record_decision(info, decision))
        if decision.promote:
            try:
                published = promote(registry, req.model, version, publisher)
            except Exception as exc:  # promote() has put the old champion back; say so on the version
                note = f"gate passed, publish failed (champion unchanged): {exc!r}"[:300]
                registry.register(replace(info, note=note))
                LAST_RUN_TS.labels(req.model, "failed").set(time.time())
                raise
        lap("gate", t)
    if decision is not None:
        GATE_DECISIONS.labels(req.model, "promoted" if decision.promote else "refused").inc()
    total = time.perf_counter() - t_start
    timings["total"] = round(total, 4)
    RUN_SECONDS.labels(req.model).set(total)
    LAST_RUN_TS.labels(req.model, "ok").set(time.time())
    log.info("training run done", extra={"model": req.model, "version": version, "timings": timings,
                                          "promoted": bool(decision and decision.promote)})  # fmt: skip
    return TrainResult(
        version=version, info=registry.get(req.model, version) or info, metrics=metrics, decision=decision,
        promoted=bool(decision and decision.promote), timings=timings, tuning=tuned, published=published,
    )  # fmt: skip


def load_champion(registry: Registry, name: str) -> ModelArtifact | None:
    """The champion's artifact (for the CLI and tests)."""
    info = registry.champion(name)
    return None if info is None else ModelArtifact.load(info.uri)
