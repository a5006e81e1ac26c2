"""Evaluation reports: one JSON document and one self-contained HTML file with embedded PNG plots.

Plots (matplotlib, Agg backend): a headline metric per model, metrics against k, and the
long-tail view (share of recommendations per item-popularity decile, long-tail coverage).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from .evaluator import EvalResult


def results_document(results: list[EvalResult], context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document: context (dataset, split, …) and one entry per model."""
    return {
        "created_at": int(time.time() * 1000),
        "context": context or {},
        "models": {r.model: r.to_dict() for r in results},
    }


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same directory, then rename: no half-written output."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report is meant to be shared
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, results: list[EvalResult], context: dict[str, Any] | None = None) -> None:
    atomic_write(path, json.dumps(results_document(results, context), indent=2).encode())


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(results: list[EvalResult], metric: str, k: int) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.model for r in results]
    out: list[tuple[str, str]] = []

    fig, ax = plt.subplots(figsize=(7, 3.5))
    vals = [r.metrics.get(f"{metric}@{k}", 0.0) for r in results]
    bars = ax.bar(names, vals, color="#4C72B0")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylabel(f"{metric}@{k}")
    ax.set_title(f"{metric.upper()}@{k} per model")
    ax.tick_params(axis="x", rotation=30)
    out.append((f"{metric}@{k} per model", _png(fig)))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, m in zip(axes, (metric, "recall"), strict=True):
        for r in results:
            ks = sorted(int(key.split("@")[1]) for key in r.metrics if key.startswith(f"{m}@"))
            ax.plot(ks, [r.metrics[f"{m}@{x}"] for x in ks], marker="o", label=r.model)
        ax.set_xlabel("k")
        ax.set_ylabel(m)
        ax.set_xscale("log")
        ax.set_title(f"{m} vs k")
    axes[0].legend(fontsize=7)
    out.append(("metrics vs k", _png(fig)))

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for r in results:
        if r.popularity_deciles:
            axes[0].plot(range(1, len(r.popularity_deciles) + 1), r.popularity_deciles, marker="o", label=r.model)
    axes[0].set_xlabel("item popularity decile (1 = most popular)")
    axes[0].set_ylabel("share of recommendations")
    axes[0].set_title("where recommendations land")
    axes[0].legend(fontsize=7)
    cov = [r.metrics.get(f"long_tail_coverage@{k}", 0.0) for r in results]
    allcov = [r.metrics.get(f"coverage@{k}", 0.0) for r in results]
    x = range(len(names))
    axes[1].bar([i - 0.2 for i in x], allcov, width=0.4, label="catalog coverage")
    axes[1].bar([i + 0.2 for i in x], cov, width=0.4, label="long-tail coverage")
    axes[1].set_xticks(list(x), names, rotation=30)
    axes[1].set_title(f"coverage@{k}")
    axes[1].legend(fontsize=7)
    out.append(("long-tail coverage", _png(fig)))
    return out


def render_html(
    results: list[EvalResult], context: dict[str, Any] | None = None, metric: str = "ndcg", k: int = 10
) -> str:
    """A single self-contained HTML page (tables + base64 PNG plots)."""
    ctx = context or {}
    cols = [f"{m}@{k}" for m in ("ndcg", "recall", "map", "hit_rate", "coverage", "novelty", "arp")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["model", *cols, "cold ndcg", "warm ndcg", "fit s"])
    rows = []
    for r in results:
        cells = [html.escape(r.model)]
        cells += [f"{r.metrics.get(c, float('nan')):.4f}" for c in cols]
        cells += [f"{r.segments.get(s, {}).get(f'ndcg@{k}', float('nan')):.4f}" for s in ("cold", "warm")]
        cells.append("" if r.fit_seconds is None else f"{r.fit_seconds:.2f}")
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    ctx_rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(v))}</td></tr>" for key, v in ctx.items()
    )
    imgs = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="data:image/png;base64,{png}"/>'
        for title, png in _plots(results, metric, k)
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Recmesh evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}th{{background:#f3f3f3}}img{{max-width:100%}}</style>
</head><body><h1>Recmesh offline evaluation</h1>
<table>{ctx_rows}</table>
<h2>Full-ranking metrics (training items excluded)</h2>
<table><tr>{head}</tr>{"".join(rows)}</table>
{imgs}
</body></html>
"""


def write_html(path: str | Path, results: list[EvalResult], context: dict[str, Any] | None = None, k: int = 10) -> None:
    atomic_write(path, render_html(results, context, k=k).encode())
