"""``recmesh model …``: offline models on plain files (fit, recommend, evaluate).

Defines ``model_app``; other Typer apps of the training service can live next to it in this
module. Bad input (missing or malformed files, unknown models, invalid params, params a model
refuses at fit time) prints one line ``error: …`` and exits with status 2; outputs are written
atomically, so a failed run leaves nothing at ``--output``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from recmesh.core.artifacts import ArtifactError, ModelArtifact, UserHistories

from .dataset import Dataset, DatasetError, FilterConfig, split_dataset
from .evaluation import EvalConfig, EvalResult, evaluate
from .evaluation.report import atomic_write, write_html, write_json
from .models import ModelError, fit_model, get_spec, make_config, model_names

model_app = typer.Typer(
    help="Offline models on plain files: fit, recommend, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


class CliInputError(ValueError):
    """Bad command-line input."""


@contextmanager
def _bad_input() -> Iterator[None]:
    """Turn known input errors into one line on stderr and exit status 2."""
    try:
        yield
    except (DatasetError, ModelError, ArtifactError, CliInputError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        raise typer.Exit(2) from None


def _parse_json(text: str | None, what: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliInputError(f"{what} is not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(value, dict):
        raise CliInputError(f"{what} must be a JSON object")
    return value


def _filters(min_user: int, min_item: int) -> FilterConfig:
    return FilterConfig(min_user_interactions=min_user, min_item_interactions=min_item)


# --------------------------------------------------------------------------- fit
@model_app.command("fit")
def fit_cmd(
    interactions: Path = typer.Option(..., "--interactions", "-i", help="CSV/Parquet/MovieLens file."),
    model: str = typer.Option("default", "--model", "-m", help="Model name (see `recmesh model list`)."),
    params: str | None = typer.Option(None, "--params", help='Model params as JSON, e.g. {"l2": 250}.'),
    output: Path = typer.Option(..., "--output", "-o", help="Artifact directory to create."),
    min_user: int = typer.Option(1, help="Drop users with fewer interactions."),
    min_item: int = typer.Option(1, help="Drop items with fewer interactions."),
) -> None:
    """Fit a model on an interaction file and write its artifact directory."""
    with _bad_input():
        config = make_config(model, _parse_json(params, "--params"))
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise CliInputError(f"{output} already exists and is not empty")
        ds = Dataset.from_file(interactions, filters=_filters(min_user, min_item))
        with console.status(f"fitting {model} on {len(ds)} interactions"):
            try:
                artifact = fit_model(model, ds, config)
            except ModelError:
                raise
            except ValueError as exc:  # what a model refuses at fit time (its params on this data)
                raise CliInputError(f"fitting {model} failed: {exc}") from None
        artifact.histories = _training_histories(ds, artifact)
        artifact.save(str(output))
    console.print(
        f"[green]wrote[/] {output}  ({artifact.kind}, {artifact.n_items} items, "
        f"{artifact.metrics.get('fit_seconds', 0):.2f}s)"
    )


def _training_histories(ds: Dataset, artifact: ModelArtifact, users: set[str] | None = None) -> UserHistories:
    """Each (wanted) user's history in ``ds`` over the artifact's item indices (unknown items dropped)."""
    remap = np.array([artifact.item_index.get(str(i), -1) for i in ds.item_ids], dtype=np.int64)
    rows = []
    for uidx, (items, w, ts) in enumerate(ds.histories()):
        uid = str(ds.user_ids[uidx])
        if users is not None and uid not in users:
            continue
        mapped = remap[items]
        ok = mapped >= 0
        rows.append((uid, mapped[ok], w[ok], ts[ok]))
    return UserHistories.from_lists(rows)


# --------------------------------------------------------------------------- recommend
def _read_users(path: Path) -> list[str]:
    if not path.exists():
        raise CliInputError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise CliInputError(f"{path}: no users (empty file)")
    first = lines[0].split(",")
    if "user_id" in [c.strip() for c in first]:
        col = [c.strip() for c in first].index("user_id")
        users = [row[col].strip() for row in csv.reader(lines[1:]) if len(row) > col and row[col].strip()]
    else:
        users = [ln.split(",")[0].strip() for ln in lines]
    if not users:
        raise CliInputError(f"{path}: no users")
    return list(dict.fromkeys(users))


@model_app.command("recommend")
def recommend_cmd(
    artifact_dir: str = typer.Option(..., "--artifact", "-a", help="Artifact directory (any fsspec URI)."),
    users: Path = typer.Option(..., "--users", "-u", help="File with one user id per line (or a user_id column)."),
    k: int = typer.Option(10, "--k", "-k", min=1, help="Recommendations per user."),
    exclude_seen: bool = typer.Option(False, "--exclude-seen", help="Drop items in the user's history."),
    interactions: Path | None = typer.Option(
        None, "--interactions", "-i", help="Interaction file giving user histories (recency-weighted)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="CSV to write: user_id,item_id,rank,score."),
) -> None:
    """Top-k recommendations per user; unknown users get the popularity fallback."""
    with _bad_input():
        user_list = _read_users(users)
        artifact = ModelArtifact.load(artifact_dir, histories=interactions is None)
        if interactions is not None:
            hist: UserHistories | None = _training_histories(Dataset.from_file(interactions), artifact, set(user_list))
        else:
            hist = artifact.histories
            if hist is None:
                console.print(
                    "[yellow]this artifact holds no training histories (written by the training service, not "
                    "`model fit`): pass --interactions, or known users are scored from their own vectors "
                    "where the model has them and get the popularity fallback otherwise"
                )
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["user_id", "item_id", "rank", "score"])
        n_fallback = 0
        for uid in user_list:
            seen = hist.get(uid) if hist is not None else None
            if seen is None:
                idx, weights = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            else:
                idx = seen[0]
                weights = artifact.history_weights(timestamps_ms=seen[2], values=seen[1])
            exclude = idx if exclude_seen else None
            if idx.size == 0 and artifact.user_vectors is not None and uid in artifact.user_index:
                assert artifact.item_vectors is not None
                scores = (artifact.item_vectors @ artifact.user_vectors[artifact.user_index[uid]]).astype(np.float64)
                top = np.argsort(-scores, kind="stable")[:k]
                top_scores = scores[top]
            else:
                if idx.size == 0:
                    n_fallback += 1
                top, top_scores = artifact.recommend(idx, weights, k=k, exclude=exclude)
            for rank, (item, score) in enumerate(zip(top, top_scores, strict=True), start=1):
                writer.writerow([uid, artifact.item_ids[int(item)], rank, f"{float(score):.6g}"])
        atomic_write(output, buf.getvalue().encode())
    console.print(f"[green]wrote[/] {output}  ({len(user_list)} users, {n_fallback} on the popularity fallback)")


# --------------------------------------------------------------------------- evaluate
def _run_models(
    ds: Dataset,
    split_spec: str,
    names: list[str],
    params: dict[str, dict[str, Any]],
    eval_cfg: EvalConfig,
    seed: int,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[EvalResult]:
    split = split_dataset(ds, split_spec, seed=seed)
    results = []
    for name in names:
        base = name.split(":", 1)[0]
        artifact = fit_model(base, split.train, make_config(base, params.get(name, params.get(base))))
        artifact.name = name

        def cb(done: int, total: int, name: str = name) -> None:
            if on_progress is not None:
                on_progress(name, done, total)

        results.append(evaluate(artifact, split, eval_cfg, progress=cb))
    return results


def results_table(results: list[EvalResult], k: int = 10, title: str = "full-ranking evaluation") -> Table:
    """Rich table of the headline metrics."""
    table = Table(title=title)
    for col in ("model", f"NDCG@{k}", f"Recall@{k}", f"MAP@{k}", f"HR@{k}", f"Cov@{k}", f"Nov@{k}", "fit s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        m = r.metrics
        table.add_row(
            r.model,
            f"{m.get(f'ndcg@{k}', 0):.4f}",
            f"{m.get(f'recall@{k}', 0):.4f}",
            f"{m.get(f'map@{k}', 0):.4f}",
            f"{m.get(f'hit_rate@{k}', 0):.4f}",
            f"{m.get(f'coverage@{k}', 0):.3f}",
            f"{m.get(f'novelty@{k}', 0):.2f}",
            "" if r.fit_seconds is None else f"{r.fit_seconds:.2f}",
        )
    return table


@model_app.command("evaluate")
def evaluate_cmd(
    interactions: Path = typer.Option(..., "--interactions", "-i", help="CSV/Parquet/MovieLens file."),
    split: str = typer.Option(
        "per-user-temporal:0.2", "--split", help="per-user-temporal:F | global-temporal:F|TS | random:F"
    ),
    models: str = typer.Option("popularity,itemknn,ease,als,default", "--models", help="Comma-separated names."),
    params: str | None = typer.Option(None, "--params", help='Per-model params, e.g. {"ease": {"l2": 250}}.'),
    k: int = typer.Option(10, "--k", "-k", min=1, help="Cut-off shown in the table and report."),
    seed: int = typer.Option(42, help="Seed of the random split."),
    report: Path | None = typer.Option(None, "--report", help="Write a self-contained HTML report here."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all metrics as JSON here."),
    min_user: int = typer.Option(1, help="Drop users with fewer interactions."),
    min_item: int = typer.Option(1, help="Drop items with fewer interactions."),
) -> None:
    """Fit each model on the training part of a split and rank the whole catalog for every test user."""
    with _bad_input():
        names = [n.strip() for n in models.split(",") if n.strip()]
        if not names:
            raise CliInputError("--models is empty")
        per_model = _parse_json(params, "--params")
        for name in names:
            base = name.split(":", 1)[0]
            p = per_model.get(name, per_model.get(base))
            if p is not None and not isinstance(p, dict):
                raise CliInputError(f"--params for {name} must be a JSON object")
            make_config(base, p)  # fail fast on unknown models and bad params
        from .dataset import parse_split

        parse_split(split)
        ks = tuple(sorted({1, 5, 10, 20, 50, k}))
        ds = Dataset.from_file(interactions, filters=_filters(min_user, min_item))
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} users"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as progress:
            tasks: dict[str, Any] = {}

            def on_progress(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = progress.add_task(name, total=total)
                progress.update(tasks[name], completed=done)

            results = _run_models(ds, split, names, per_model, EvalConfig(ks=ks), seed, on_progress)
        context = {
            "interactions": str(interactions),
            "split": split,
            "users": ds.n_users,
            "items": ds.n_items,
            "events": len(ds),
        }
        if json_out is not None:
            write_json(json_out, results, context)
        if report is not None:
            write_html(report, results, context, k=k)
    Console().print(results_table(results, k))


@model_app.command("list")
def list_cmd() -> None:
    """List the registered models and their parameters."""
    table = Table(title="models")
    table.add_column("name")
    table.add_column("description")
    table.add_column("params")
    for name in model_names():
        spec = get_spec(name)
        table.add_row(name, spec.description, ", ".join(spec.config_cls.model_fields))
    Console().print(table)
