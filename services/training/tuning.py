"""Hyperparameter tuning with Optuna (seeded TPE) on a validation split carved from training data.

The caller's test split is never seen here: :func:`tune` receives the *training* dataset, splits
it again (``val_split``, the last 20% of each user's training history by default) and searches
the model's space on that inner split. The caller fits the best parameters on the whole
training part and evaluates once on the test split. Budget: a number of trials, minutes, or
both (whichever ends first); with a trial budget and the same seed the search is reproducible.

Search spaces are declared per model name in :data:`SPACES`; models without an entry tune the
scoring settings every model shares (recency half-life, popularity blend). Suggested parameters
the model's config does not know are dropped, so a space never breaks a config.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .dataset import Dataset, Split, split_dataset
from .evaluation.evaluator import EvalConfig, evaluate
from .models import fit_model, get_spec, make_config

log = logging.getLogger(__name__)

Space = Callable[[Any], dict[str, Any]]


def _common(trial: Any) -> dict[str, Any]:
    use_hl = trial.suggest_categorical("use_half_life", [False, True])
    out: dict[str, Any] = {"popularity_blend": trial.suggest_float("popularity_blend", 0.0, 0.3)}
    # "no half-life" must switch recency off even for configs whose default has one
    out["half_life"] = trial.suggest_float("half_life", 2.0, 200.0, log=True) if use_hl else None
    return out


SPACES: dict[str, Space] = {
    "popularity": lambda t: {
        "popularity_half_life_days": t.suggest_float("popularity_half_life_days", 1.0, 365.0, log=True)
    },
    "itemknn": lambda t: {
        "similarity": t.suggest_categorical("similarity", ["cosine", "bm25"]),
        "neighbors": t.suggest_int("neighbors", 10, 400, log=True),
        "shrink": t.suggest_float("shrink", 0.0, 100.0),
    },
    "ease": lambda t: {"l2": t.suggest_float("l2", 10.0, 5000.0, log=True)},
    "default": lambda t: {
        "half_life": t.suggest_float("half_life", 2.0, 50.0, log=True),
        "l2": t.suggest_float("l2", 50.0, 5000.0, log=True),
        "seq_weight": t.suggest_float("seq_weight", 0.0, 3.0),
        "seq_l2": t.suggest_float("seq_l2", 50.0, 5000.0, log=True),
        "seq_half_life": t.suggest_float("seq_half_life", 2.0, 50.0, log=True),
        "popularity_blend": t.suggest_float("popularity_blend", 0.0, 0.2),
    },
    "als": lambda t: {
        "factors": t.suggest_categorical("factors", [16, 32, 64, 128]),
        "regularization": t.suggest_float("regularization", 1e-3, 1.0, log=True),
        "alpha": t.suggest_float("alpha", 0.5, 40.0, log=True),
        "iterations": t.suggest_int("iterations", 5, 30),
    },
    "bpr": lambda t: {
        "factors": t.suggest_categorical("factors", [16, 32, 64, 128]),
        "learning_rate": t.suggest_float("learning_rate", 1e-3, 0.2, log=True),
        "regularization": t.suggest_float("regularization", 1e-4, 0.1, log=True),
        "iterations": t.suggest_int("iterations", 20, 200, log=True),
    },
    "sasrec": lambda t: {
        "dim": t.suggest_categorical("dim", [32, 64]),
        "dropout": t.suggest_float("dropout", 0.0, 0.5),
        "learning_rate": t.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "max_len": t.suggest_categorical("max_len", [20, 50]),
    },
    "spark_als": lambda t: {
        "factors": t.suggest_categorical("factors", [16, 32, 64]),
        "regularization": t.suggest_float("regularization", 1e-3, 1.0, log=True),
        "alpha": t.suggest_float("alpha", 0.5, 40.0, log=True),
    },
}


@dataclass
class TuneResult:
    """Best parameters and the per-trial history (JSON-ready through :meth:`to_dict`)."""

    model: str
    metric: str
    best_params: dict[str, Any]
    best_value: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    seed: int = 42
    val_split: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "metric": self.metric, "best_params": self.best_params,
            "best_value": self.best_value, "history": self.history, "seconds": round(self.seconds, 3),
            "seed": self.seed, "val_split": self.val_split,
        }  # fmt: skip


def sample_split(split: Split, max_users: int | None, seed: int = 42) -> Split:
    """The split restricted to at most ``max_users`` test users (seeded), same id maps.

    Full ranking stays exact for the sampled users (their whole training history is kept); the
    cost of evaluation becomes bounded whatever the data size.
    """
    test_users = split.test.frame["uidx"].unique()
    if max_users is None or test_users.size <= max_users:
        return split
    import numpy as np

    rng = np.random.default_rng(seed)
    chosen = np.zeros(split.train.n_users, dtype=bool)
    chosen[rng.choice(np.sort(test_users), size=max_users, replace=False)] = True
    return Split(
        train=split.train.subset(chosen[split.train.frame["uidx"].to_numpy()]),
        test=split.test.subset(chosen[split.test.frame["uidx"].to_numpy()]),
        description=f"{split.description} (sample of {max_users} users, seed {seed})",
    )


class _DefaultsTrial:
    """Answers a space's suggestions with the model's defaults (plus ``base``), recording them, so
    the defaults can be enqueued as trial 0: tuning then never returns worse than the defaults on
    the validation split. Values a space cannot express (outside its range) are left to the sampler."""

    def __init__(self, name: str, base: dict[str, Any]) -> None:
        self.defaults = {**make_config(name, {}).model_dump(), **base}
        self.params: dict[str, Any] = {}

    def _take(self, name: str, ok: bool) -> Any:
        v = self.defaults.get(name)
        if ok:
            self.params[name] = v
        return v

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> Any:
        v = self.defaults.get(name)
        return self._take(name, isinstance(v, int | float) and low <= v <= high)

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> Any:
        v = self.defaults.get(name)
        return self._take(name, isinstance(v, int) and low <= v <= high)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name == "use_half_life":  # _common's switch: on when the default has a half-life
            self.params[name] = self.defaults.get("half_life") is not None
            return self.params[name]
        return self._take(name, self.defaults.get(name) in choices)


def default_trial(name: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Optuna params that reproduce ``name``'s defaults (as far as its space can)."""
    t = _DefaultsTrial(name, dict(base or {}))
    SPACES.get(name, _common)(t)
    return t.params


def _params_for(name: str, trial: Any, base: dict[str, Any]) -> dict[str, Any]:
    space = SPACES.get(name, _common)
    suggested = space(trial)
    known = set(get_spec(name).config_cls.model_fields)
    params = {**base, **{k: v for k, v in suggested.items() if k in known}}
    return params


def tune(
    name: str,
    train: Dataset,
    n_trials: int | None = 20,
    minutes: float | None = None,
    seed: int = 42,
    metric: str = "ndcg@10",
    val_split: str = "per-user-temporal:0.2",
    base_params: dict[str, Any] | None = None,
    eval_max_users: int | None = 2000,
) -> TuneResult:
    """Search ``name``'s space on an inner validation split of ``train``; returns the best params."""
    import optuna

    if not n_trials and not minutes:
        raise ValueError("a tuning budget needs n_trials or minutes")
    base = dict(base_params or {})
    base.setdefault("seed", seed)
    inner = sample_split(split_dataset(train, val_split, seed=seed), eval_max_users, seed)
    k = int(metric.split("@")[1]) if "@" in metric else 10
    eval_cfg = EvalConfig(ks=tuple(sorted({k, 10})))
    history: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        params = _params_for(name, trial, base)
        t0 = time.perf_counter()
        art = fit_model(name, inner.train, params)
        value = float(evaluate(art, inner, eval_cfg).metrics[metric])
        history.append({"number": trial.number, "value": value, "params": params,
                        "seconds": round(time.perf_counter() - t0, 3)})  # fmt: skip
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(default_trial(name, base), skip_if_exists=True)
    t0 = time.perf_counter()
    study.optimize(
        objective,
        n_trials=n_trials or None,
        timeout=minutes * 60 if minutes else None,
        catch=(ValueError, ArithmeticError),
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise ValueError(f"tuning {name}: every trial failed")
    best = study.best_trial
    best_params = next(h["params"] for h in history if h["number"] == best.number)
    log.info("tuning done", extra={"model": name, "trials": len(study.trials), "best": best.value})
    return TuneResult(
        model=name, metric=metric, best_params=best_params, best_value=float(best.value),
        history=history, seconds=time.perf_counter() - t0, seed=seed, val_split=val_split,
    )  # fmt: skip


# --------------------------------------------------------------------------- report
def history_plot_png(result: TuneResult) -> bytes:
    """Trial values and the best-so-far curve as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [h["number"] for h in result.history]
    ys = [h["value"] for h in result.history]
    best, cur = [], float("-inf")
    for y in ys:
        cur = max(cur, y)
        best.append(cur)
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    ax.scatter(xs, ys, s=18, alpha=0.7, label="trial")
    ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {result.metric}")
    ax.set_title(f"Optuna TPE tuning of {result.model} (seed {result.seed})")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def tuning_section_html(result: TuneResult) -> str:
    """An HTML ``<section>`` (plot + best parameters + trial table) for a report page."""
    img = base64.b64encode(history_plot_png(result)).decode()
    rows = "".join(
        f"<tr><td>{h['number']}</td><td>{h['value']:.4f}</td><td>{h['seconds']:.2f}</td>"
        f"<td><code>{html.escape(str({k: v for k, v in h['params'].items() if k != 'seed'}))}</code></td></tr>"
        for h in result.history
    )
    best = html.escape(str(result.best_params))
    return (
        f"<section id='tuning'><h2>Tuning history: {html.escape(result.model)}</h2>"
        f"<p>{len(result.history)} trials in {result.seconds:.1f}s on the validation split "
        f"<code>{html.escape(result.val_split)}</code> carved from the training data; best "
        f"{html.escape(result.metric)} = {result.best_value:.4f} with <code>{best}</code>.</p>"
        f"<img alt='tuning history' src='data:image/png;base64,{img}'/>"
        f"<table><tr><th>trial</th><th>{html.escape(result.metric)}</th><th>s</th><th>params</th></tr>"
        f"{rows}</table></section>"
    )


def write_report(result: TuneResult, path: str, extra_sections: list[str] | None = None) -> str:
    """A standalone HTML page with the tuning section (and any other sections given)."""
    import fsspec

    body = "".join([tuning_section_html(result), *(extra_sections or [])])
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Recmesh tuning report</title>"
        "<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}</style></head><body>"
        f"{body}</body></html>"
    )
    with fsspec.open(path, "w") as fh:
        fh.write(page)
    return path
