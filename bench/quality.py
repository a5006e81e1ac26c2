"""Quality benchmark: every registered model on MovieLens-100K, per-user temporal split.

Fits each model on the training part (the last 20 % of every user's history is held out), ranks
the whole catalog for every test user with training items excluded, and reports NDCG@10,
Recall@10 and fit seconds side by side. ``default`` is compared with the best plain classical
baseline (EASE, ALS, ItemKNN with their standard settings) measured in the same run; the same
comparison on a validation split carved out of the training part (where ``default`` was tuned)
is reported too, so the test number is not the only evidence.

    python bench/quality.py [--models a,b] [--skip sasrec] [--data DIR]

Writes bench/results/quality.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from recmesh.training.dataset import Dataset, split_dataset
from recmesh.training.evaluation import EvalConfig, evaluate
from recmesh.training.models import REGISTRY, baseline_names, fit_model, model_names

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "quality.json"
SPLIT = "per-user-temporal:0.2"

# extra rows: ablations that show where the default's gain comes from
VARIANTS: dict[str, tuple[str, dict]] = {
    "itemknn-bm25": ("itemknn", {"similarity": "bm25"}),
    "ease+recency": ("ease", {"half_life": 8.0, "recency_floor": 0.03}),
    "default-no-seq": ("default", {"seq_weight": 0.0}),
}
# deep models get a wall-clock cap so the benchmark stays a few minutes on a laptop
CAPS: dict[str, dict] = {"sasrec": {"max_seconds": 240}}


def ml100k_dir() -> Path:
    out = subprocess.run([str(ROOT / "infra" / "data" / "ml100k.sh")], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def run(ds: Dataset, split_spec: str, rows: list[tuple[str, str, dict]], console: Console, label: str) -> dict:
    split = split_dataset(ds, split_spec)
    out: dict[str, dict] = {}
    for row, model, params in rows:
        known = REGISTRY[model].config_cls.model_fields
        params = {k: v for k, v in params.items() if k in known}
        t0 = time.perf_counter()
        art = fit_model(model, split.train, params)
        fit_s = time.perf_counter() - t0
        res = evaluate(art, split, EvalConfig(ks=(10, 20)))
        m = res.metrics
        out[row] = {
            "model": model,
            "params": params,
            "ndcg@10": round(m["ndcg@10"], 5),
            "recall@10": round(m["recall@10"], 5),
            "map@10": round(m["map@10"], 5),
            "hit_rate@10": round(m["hit_rate@10"], 5),
            "ndcg@20": round(m["ndcg@20"], 5),
            "coverage@10": round(m["coverage@10"], 5),
            "novelty@10": round(m["novelty@10"], 4),
            "fit_seconds": round(fit_s, 3),
            "eval_seconds": round(res.eval_seconds, 3),
            "users": res.n_users,
        }
        console.print(f"  [{label}] {row:16s} ndcg@10={m['ndcg@10']:.4f}  fit {fit_s:6.2f}s")
    return {"split": split_spec, "train": len(split.train), "test": len(split.test), "models": out}


def compare(models: dict[str, dict], baselines: list[str]) -> dict:
    present = [b for b in baselines if b in models]
    if "default" not in models or not present:
        return {}
    best = max(present, key=lambda b: models[b]["ndcg@10"])
    ratio = models["default"]["ndcg@10"] / models[best]["ndcg@10"]
    return {
        "best_baseline": best,
        "baseline_ndcg@10": models[best]["ndcg@10"],
        "default_ndcg@10": models["default"]["ndcg@10"],
        "ratio": round(ratio, 4),
        "improvement_pct": round(100 * (ratio - 1), 2),
        "meets_5pct": ratio >= 1.05,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated registry names (default: all)")
    ap.add_argument("--skip", default="", help="comma-separated names to leave out")
    ap.add_argument("--data", help="ML-100K directory (default: infra/data/ml100k.sh)")
    ap.add_argument("--no-validation", action="store_true", help="skip the validation-split comparison")
    args = ap.parse_args(argv)
    console = Console(width=max(Console().width, 110))  # keep the table readable when piped
    skip = {s for s in args.skip.split(",") if s}
    names = [n for n in (args.models.split(",") if args.models else model_names()) if n not in skip]
    rows = [(n, n, CAPS.get(n, {})) for n in names]
    rows += [(v, m, p) for v, (m, p) in VARIANTS.items() if m in names and v not in skip]

    data_dir = Path(args.data) if args.data else ml100k_dir()
    ds = Dataset.from_file(data_dir)
    console.print(f"ML-100K: {ds.n_users} users, {ds.n_items} items, {len(ds)} ratings (all ratings = positive)")
    t0 = time.perf_counter()
    test = run(ds, SPLIT, rows, console, "test")
    doc: dict = {
        "benchmark": "quality",
        "dataset": "MovieLens-100K (RecBole atomic files)",
        "data_dir": str(data_dir),
        "users": ds.n_users,
        "items": ds.n_items,
        "interactions": len(ds),
        "protocol": "full ranking over all items, training items excluded; relevant = held-out items",
        "baselines": baseline_names(),
        "test": test,
        "default_vs_best_baseline": compare(test["models"], baseline_names()),
    }
    if not args.no_validation:
        # the default recipe was tuned here: the inner split of the training part, never the test users' last 20 %
        val_rows = [r for r in rows if r[1] in baseline_names() or r[0] == "default"]
        inner = run(split_dataset(ds, SPLIT).train, SPLIT, val_rows, console, "validation")
        doc["validation"] = inner
        doc["validation_default_vs_best_baseline"] = compare(inner["models"], baseline_names())
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    doc["machine"] = {"python": sys.version.split()[0], "platform": platform.platform()}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(doc, indent=2))

    table = Table(title=f"MovieLens-100K, {SPLIT}, full ranking")
    for col in ("model", "NDCG@10", "Recall@10", "MAP@10", "HR@10", "Cov@10", "fit s", "vs best baseline"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
    cmp_ = doc["default_vs_best_baseline"]
    base = cmp_.get("baseline_ndcg@10")
    for row, m in sorted(test["models"].items(), key=lambda kv: -kv[1]["ndcg@10"]):
        rel = f"{m['ndcg@10'] / base:.3f}×" if base else ""
        table.add_row(
            row, f"{m['ndcg@10']:.4f}", f"{m['recall@10']:.4f}", f"{m['map@10']:.4f}", f"{m['hit_rate@10']:.4f}",
            f"{m['coverage@10']:.3f}", f"{m['fit_seconds']:.2f}", rel,
        )  # fmt: skip
    console.print(table)
    if cmp_:
        console.print(
            f"default vs best baseline ({cmp_['best_baseline']}): {cmp_['ratio']:.3f}× "
            f"({cmp_['improvement_pct']:+.1f} % NDCG@10)"
        )
    vcmp = doc.get("validation_default_vs_best_baseline")
    if vcmp:
        console.print(f"on the validation split: {vcmp['ratio']:.3f}× over {vcmp['best_baseline']}")
    console.print(f"wrote {RESULT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
