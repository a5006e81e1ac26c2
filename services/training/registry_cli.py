"""``recmesh models`` (list, show, promote, rollback) and ``recmesh train run``.

Both read :class:`~recmesh.training.settings.TrainingSettings` (registry URI, lake URI, gate,
Kafka for ``models.published.v1``). ``promote`` and ``rollback`` publish the new champion so
scoring and personalization hot-swap; ``--no-publish`` only moves the registry pointer.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from recmesh.core.errors import Unavailable
from recmesh.core.registry import Registry

models_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Model registry.")
train_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Train and register models.")
console = Console()


def _settings() -> Any:
    from .settings import TrainingSettings

    return TrainingSettings()


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


def _publisher(settings: Any, publish: bool) -> tuple[Any, Any]:
    if not publish:
        return None, lambda: None
    from .gate import kafka_publisher

    return kafka_publisher(settings)


# --------------------------------------------------------------------------- models
@models_app.command("list")
def list_models(
    name: str | None = typer.Argument(None, help="Model name (all models when omitted)."),
    registry: str | None = typer.Option(None, help="Registry URI (default: settings)."),
    metric: str = typer.Option("ndcg@10", help="Metric column to show."),
) -> None:
    """Versions with status, metric, data range and creation time."""
    reg = Registry(registry or _settings().registry.uri)
    names = [name] if name else reg.models()
    table = Table(title=f"registry {reg.uri}")
    for col in ("model", "version", "status"):
        table.add_column(col, no_wrap=True)
    for col in (metric, "data", "created", "note"):
        table.add_column(col, overflow="fold")
    for n in names:
        champ = reg.state(n).get("champion")
        for v in reversed(reg.versions(n)):
            style = "bold green" if v.version == champ else None
            val = v.metrics.get(metric)
            table.add_row(
                n, v.version, v.status, "-" if val is None else f"{val:.4f}",
                f"{_when(v.data_start)} → {_when(v.data_end)}", _when(v.created_at), v.note[:60], style=style,
            )  # fmt: skip
    console.print(table)


@models_app.command("show")
def show(
    name: str = typer.Argument(..., help="Model name."),
    version: str | None = typer.Argument(None, help="Version (default: the champion)."),
    registry: str | None = typer.Option(None, help="Registry URI (default: settings)."),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """One version's record: params, metrics, data range, dataset hash, code version."""
    from dataclasses import asdict

    reg = Registry(registry or _settings().registry.uri)
    info = reg.get(name, version) if version else reg.champion(name)
    if info is None:
        _fail(f"{name}: no such version {version}" if version else f"{name} has no champion")
        return
    if as_json:
        typer.echo(json.dumps(asdict(info), indent=2, sort_keys=True))
        return
    t = Table(title=f"{name} {info.version} ({info.status})", show_header=False)
    t.add_column("field", style="cyan")
    t.add_column("value", overflow="fold")
    for key in ("uri", "kind", "split", "dataset_hash", "code_version", "note"):
        t.add_row(key, str(getattr(info, key)))
    t.add_row("data", f"{_when(info.data_start)} → {_when(info.data_end)}")
    t.add_row("created", _when(info.created_at))
    t.add_row("params", json.dumps(info.params, sort_keys=True))
    for k, v in sorted(info.metrics.items()):
        t.add_row(f"metric {k}", f"{v:.4f}" if isinstance(v, float) else str(v))
    console.print(t)


@models_app.command("promote")
def promote_cmd(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version to make champion (bypasses the gate)."),
    registry: str | None = typer.Option(None, help="Registry URI (default: settings)."),
    publish: bool = typer.Option(True, "--publish/--no-publish", help="Publish models.published.v1."),
) -> None:
    """Make a version champion by hand and publish it."""
    from .gate import promote

    settings = _settings()
    reg = Registry(registry or settings.registry.uri)
    if reg.get(name, version) is None:
        _fail(f"{name} has no version {version}")
    pub, close = _publisher(settings, publish)
    try:
        ev = promote(reg, name, version, pub, action="promote")
    except Unavailable as exc:
        _fail(f"{exc} (champion unchanged)")
        return
    finally:
        close()
    console.print(f"[green]{name} champion is now {version}[/green] (was {ev.previous_version or '-'})")


@models_app.command("rollback")
def rollback_cmd(
    name: str = typer.Argument(..., help="Model name."),
    registry: str | None = typer.Option(None, help="Registry URI (default: settings)."),
    publish: bool = typer.Option(True, "--publish/--no-publish", help="Publish models.published.v1."),
) -> None:
    """Restore the previous champion and publish it."""
    from .gate import rollback

    settings = _settings()
    reg = Registry(registry or settings.registry.uri)
    pub, close = _publisher(settings, publish)
    try:
        ev = rollback(reg, name, pub)
    except (ValueError, Unavailable) as exc:
        _fail(f"{exc} (champion unchanged)" if isinstance(exc, Unavailable) else str(exc))
        return
    finally:
        close()
    console.print(f"[yellow]{name} rolled back to {ev.version}[/yellow] (demoted {ev.previous_version})")


# --------------------------------------------------------------------------- train
@train_app.callback()
def _train_group() -> None:
    """Train and register models (a group, so ``recmesh train run`` stays ``run`` as commands grow)."""


def _parse_time(value: str | None) -> int | None:
    """Epoch ms, an ISO date/time (UTC), or a relative ``-7d`` / ``-12h``."""
    if value is None:
        return None
    v = value.strip()
    if v.startswith("-") and v[-1] in "dhm" and v[1:-1].replace(".", "").isdigit():
        unit = {"d": 86_400_000, "h": 3_600_000, "m": 60_000}[v[-1]]
        return int(time.time() * 1000 - float(v[1:-1]) * unit)
    if v.isdigit():
        return int(v)
    dt = datetime.fromisoformat(v)
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


def request_from_settings(settings: Any, model: str | None = None, **overrides: Any) -> Any:
    """A :class:`TrainRequest` with the service's gate, split, seed and Spark settings."""
    from .gate import GateConfig
    from .pipeline import TrainRequest

    tr = settings.training
    name = model or tr.model
    params = dict(tr.params) if name == tr.model else {}
    if name == "spark_als":
        params.setdefault("master", tr.spark_master)
        params.setdefault("driver_memory", tr.spark_driver_memory)
        params.setdefault("shuffle_partitions", tr.spark_shuffle_partitions)
    params.update(overrides.pop("params", None) or {})
    base: dict[str, Any] = {
        "model": name, "params": params, "split": tr.split, "seed": tr.seed,
        "eval_max_users": tr.eval_max_users, "tune_trials": tr.tune_trials, "tune_minutes": tr.tune_minutes,
        "gate": GateConfig(metric=tr.gate_metric, margin=tr.gate_margin),
    }  # fmt: skip
    base.update(overrides)
    return TrainRequest(**base)


@train_app.command("run")
def run_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name (see `recmesh model list`)."),
    from_lake: bool = typer.Option(False, "--from-lake", help="Read interactions from the Parquet lake."),
    interactions: str | None = typer.Option(None, "--interactions", help="Interaction file instead."),
    lake: str | None = typer.Option(None, help="Lake URI (default: settings)."),
    since: str | None = typer.Option(None, help="Start of the data range: epoch ms, ISO time or -7d."),
    until: str | None = typer.Option(None, help="End of the data range (exclusive)."),
    params: str | None = typer.Option(None, help="Model params as JSON, e.g. '{\"factors\": 32}'."),
    tune_trials: int = typer.Option(0, help="Optuna trials on a validation split (0 = off)."),
    tune_minutes: float | None = typer.Option(None, help="Optuna time budget in minutes."),
    promote: bool = typer.Option(True, "--promote/--no-promote", help="Run the gate and promote a winner."),
    publish: bool = typer.Option(True, "--publish/--no-publish", help="Publish a promotion to Kafka."),
    margin: float | None = typer.Option(None, help="Gate margin (relative; default: settings)."),
    registry: str | None = typer.Option(None, help="Registry URI (default: settings)."),
) -> None:
    """Train a model for a time range, register it, gate it against the champion."""
    from .pipeline import TrainingError, run_training

    if from_lake == bool(interactions):
        _fail("give exactly one of --from-lake or --interactions FILE")
    settings = _settings()
    overrides: dict[str, Any] = {
        "lake_uri": (lake or settings.training.lake_uri) if from_lake else None,
        "interactions": interactions, "start_ms": _parse_time(since), "end_ms": _parse_time(until),
        "promote": promote, "params": json.loads(params) if params else None,
    }  # fmt: skip
    if tune_trials:
        overrides["tune_trials"] = tune_trials
    if tune_minutes:
        overrides["tune_minutes"] = tune_minutes
    req = request_from_settings(settings, model, **overrides)
    if margin is not None:
        from dataclasses import replace

        req.gate = replace(req.gate, margin=margin)
    reg = Registry(registry or settings.registry.uri)
    pub, close = _publisher(settings, publish and promote)
    try:
        with console.status(f"training {model}…"):
            res = run_training(req, reg, pub)
    except (TrainingError, ValueError) as exc:
        _fail(str(exc))
        return
    finally:
        close()
    t = Table(title=f"{model} {res.version}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in sorted(res.metrics):
        if "@" in k and k.split("@")[0] in ("ndcg", "recall", "hit_rate", "coverage"):
            t.add_row(k, f"{res.metrics[k]:.4f}")
    for k, v in res.timings.items():
        t.add_row(f"seconds {k}", f"{v:.2f}")
    console.print(t)
    if res.decision is None:
        console.print("gate skipped (--no-promote): registered as challenger")
    else:
        colour = "green" if res.promoted else "yellow"
        verdict = "promoted" if res.promoted else "kept as challenger"
        console.print(f"[{colour}]{verdict}[/{colour}]: {res.decision.reason}")
    if res.tuning is not None:
        console.print(f"tuning report: {res.info.uri}/tuning.html")
