"""Training benchmark: the full pipeline vs the raw ``implicit`` ALS fit, plus PyTorch and Spark.

A synthetic power-law dataset (default 1M interactions, 50k users × 20k items, Zipf item
popularity, power-law user activity, a latent group structure so the model has something to
learn) is first written to a Parquet lake laid out exactly as the sink writes it. Then, timed:

* ``pipeline`` — ``run_training`` end to end: read the lake, build the dataset and the matrix,
  split, fit ALS, evaluate (full ranking over a seeded sample of ``--eval-users`` (1000) test users),
  write the artifact and register it (gate included; the registry starts empty);
* ``raw implicit`` — ``implicit``'s ALS ``fit`` alone on the same training matrix with the same
  parameters, in the same run (the baseline): ``overhead_ratio = pipeline / raw`` (target ≤ 1.5);
* ``sasrec`` — seconds per epoch of the PyTorch model on the same training data (sampled softmax);
* ``spark_als`` — Spark ALS fit on the same data and, unless ``--spark-iterations`` says
  otherwise, the same iterations as the ALS fit, for reference (session start-up reported apart).

    python bench/train.py [--interactions N] [--users U] [--items I] [--spark-iterations N]
                          [--skip-torch] [--skip-spark]

Writes bench/results/train.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from recmesh.core.registry import Registry
from recmesh.training import lake
from recmesh.training.dataset import Dataset, normalize_frame, split_dataset
from recmesh.training.gate import GateConfig
from recmesh.training.models.base import limit_blas_threads
from recmesh.training.pipeline import TrainRequest, run_training

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "train.json"
DAY = 86_400_000
ALS_PARAMS = {"factors": 64, "iterations": 15, "regularization": 0.05, "alpha": 2.0}


def synthetic(n: int, n_users: int, n_items: int, seed: int = 0) -> pd.DataFrame:
    """Zipf item popularity, power-law user activity, 64 taste groups with shifted item rankings."""
    rng = np.random.default_rng(seed)
    activity = rng.pareto(1.5, n_users) + 1.0
    users = rng.choice(n_users, size=n, p=activity / activity.sum())
    ranks = np.arange(1, n_items + 1, dtype=np.float64)
    pop = 1.0 / ranks**1.05
    base = rng.choice(n_items, size=n, p=pop / pop.sum())
    groups = users % 64
    shift = (groups * (n_items // 64)) % n_items
    personal = rng.random(n) < 0.6  # 60% of the events follow the user's group ranking
    items = np.where(personal, (base + shift) % n_items, base)
    ts = np.sort(rng.integers(0, 28 * DAY, size=n)) + 1_780_000_000_000
    ev = rng.choice(["view", "click", "purchase"], size=n, p=[0.6, 0.35, 0.05])
    return pd.DataFrame(
        {
            "event_id": pd.RangeIndex(n).astype(str),
            "user_id": pd.Series(users).astype(str).radd("u"),
            "item_id": pd.Series(items).astype(str).radd("i"),
            "event_type": ev,
            "timestamp": ts,
        }
    )


def write_lake(df: pd.DataFrame, uri: str, partitions: int = 6, rows_per_file: int = 5000) -> int:
    """Lay the frame out as the sink would: per partition, offset-ranged files in date folders."""
    n = len(df)
    full = pd.DataFrame(
        {
            "event_id": df["event_id"], "user_id": df["user_id"], "item_id": df["item_id"],
            "event_type": df["event_type"], "value": np.nan, "timestamp": df["timestamp"],
            "session_id": None, "request_id": None, "context": "{}", "tenant": "default", "source": "bench",
            "_partition": (np.arange(n) % partitions).astype(np.int32), "_offset": np.arange(n) // partitions,
            "_kafka_ts": df["timestamp"],
        }
    )  # fmt: skip
    full["_day"] = pd.to_datetime(full["timestamp"], unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    writer = lake.LakeWriter(uri)
    files = 0
    schema = lake.SCHEMAS["interactions.v1"]
    for (p, day), g in full.groupby(["_partition", "_day"], sort=True):
        for start in range(0, len(g), rows_per_file):
            chunk = g.iloc[start : start + rows_per_file]
            first, last = int(chunk["_offset"].iloc[0]), int(chunk["_offset"].iloc[-1])
            table = pa.Table.from_pandas(chunk.drop(columns="_day"), schema=schema, preserve_index=False)
            lake.write_file(writer.fs, lake.file_path(writer.root, "interactions.v1", day, int(p), first, last), table)
            files += 1
    return files


def raw_implicit_seconds(train_matrix, params: dict, seed: int) -> float:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=params["factors"], regularization=params["regularization"],
                                    alpha=params["alpha"], iterations=params["iterations"], use_cg=True,
                                    random_state=seed)  # fmt: skip
    with limit_blas_threads(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t0 = time.perf_counter()
        model.fit(train_matrix, show_progress=False)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--interactions", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--eval-users", type=int, default=1000)
    ap.add_argument("--spark-iterations", type=int, default=ALS_PARAMS["iterations"],
                    help="Spark ALS iterations (default: the same as the ALS fit, so the times compare)")  # fmt: skip
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--skip-spark", action="store_true")
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    console = Console()
    seed = 42
    work = Path(tempfile.mkdtemp(prefix="recmesh-bench-train-"))
    result: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    try:
        t0 = time.perf_counter()
        df = synthetic(args.interactions, args.users, args.items)
        lake_uri = str(work / "lake")
        files = write_lake(df, lake_uri)
        console.print(f"lake: {len(df):,} interactions in {files} files ({time.perf_counter() - t0:.1f}s to write)")
        result["dataset"] = {"interactions": len(df), "users": int(df["user_id"].nunique()),
                             "items": int(df["item_id"].nunique()), "lake_files": files}  # fmt: skip

        # the baseline's input: the same training matrix the pipeline fits (same split, same weights)
        ds = Dataset.from_frame(normalize_frame(df[["user_id", "item_id", "timestamp", "event_type"]]))
        split = split_dataset(ds, "per-user-temporal:0.2", seed=seed)
        train_matrix = split.train.matrix().tocsr()
        del df

        # best of 3, raw and pipeline interleaved: the machine is shared, contention only adds time
        raws, runs = [], []
        for rep in range(3):
            raws.append(raw_implicit_seconds(train_matrix, ALS_PARAMS, seed))
            reg = Registry(str(work / f"registry{rep}"))  # empty registry: the first version, no champion
            req = TrainRequest("als", params=dict(ALS_PARAMS), lake_uri=lake_uri, seed=seed,
                               eval_max_users=args.eval_users, gate=GateConfig())  # fmt: skip
            t0 = time.perf_counter()
            res = run_training(req, reg, None)
            runs.append((time.perf_counter() - t0, res))
        raw = min(raws)
        pipeline_s, res = min(runs, key=lambda r: r[0])
        result["pipeline"] = {"seconds": round(pipeline_s, 3), "timings": res.timings,
                              "ndcg@10": res.metrics.get("ndcg@10"), "recall@10": res.metrics.get("recall@10"),
                              "eval_users": res.metrics.get("eval_users"), "version": res.version}  # fmt: skip
        result["raw_implicit_fit_seconds"] = round(raw, 3)
        result["overhead_ratio"] = round(pipeline_s / raw, 3)
        # the part that does not drift with the ALS fit: everything but the fit step itself
        result["non_fit_seconds"] = round(pipeline_s - res.timings["fit"], 3)
        result["raw_runs"] = [round(x, 3) for x in raws]
        result["pipeline_runs"] = [round(x, 3) for x, _ in runs]
        result["als_params"] = ALS_PARAMS

        if not args.skip_torch:
            from recmesh.training.models.sasrec import SASRecConfig, _fit

            log: list[dict] = []
            cfg = SASRecConfig(epochs=2, patience=5, loss="sampled", negatives=512, max_len=20, dim=64,
                               batch_size=256, val_users=500, threads=args.torch_threads, seed=seed)  # fmt: skip
            _fit(split.train, cfg, log)
            result["sasrec"] = {"seconds_per_epoch": round(float(np.mean([e["seconds"] for e in log])), 3),
                                "epochs": log, "config": cfg.model_dump(mode="json")}  # fmt: skip

        if not args.skip_spark:
            from recmesh.training.models import REGISTRY, fit_model

            if "spark_als" in REGISTRY:
                from recmesh.training.models.spark_als import SparkALSConfig, spark_session, stop_spark

                t0 = time.perf_counter()
                spark_session(SparkALSConfig())
                session_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                spark_params = {**ALS_PARAMS, "iterations": args.spark_iterations, "seed": seed}
                fit_model("spark_als", split.train, spark_params)
                result["spark_als"] = {
                    "fit_seconds": round(time.perf_counter() - t0, 3),
                    "session_start_seconds": round(session_s, 3),
                    "params": spark_params,
                    "spark_iterations": args.spark_iterations,
                    "als_iterations": ALS_PARAMS["iterations"],  # differs only when --spark-iterations says so
                }
                stop_spark()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2, default=str))
    table = Table(title=f"training on {result['dataset']['interactions']:,} interactions")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_column("note")
    table.add_row("raw implicit ALS fit", f"{raw:.2f}", "baseline, same matrix and params (best of 3)")
    ratio = result["overhead_ratio"]
    table.add_row("full pipeline", f"{pipeline_s:.2f}", f"best of 3; overhead ratio {ratio:.2f} (target ≤ 1.5)")
    table.add_row("  all but the fit", f"{result['non_fit_seconds']:.2f}", "read + dataset + evaluate + register")
    for k, v in res.timings.items():
        if k != "total":
            table.add_row(f"  {k}", f"{v:.2f}", "")
    if "sasrec" in result:
        per_epoch = result["sasrec"]["seconds_per_epoch"]
        table.add_row("sasrec, per epoch", f"{per_epoch:.2f}", "PyTorch CPU, sampled softmax")
    if "spark_als" in result:
        s = result["spark_als"]
        note = (f"{s['spark_iterations']} iterations (ALS: {s['als_iterations']}), "
                f"+ {s['session_start_seconds']:.1f}s session start")  # fmt: skip
        table.add_row("spark_als fit", f"{s['fit_seconds']:.2f}", note)
    console.print(table)
    console.print(f"ndcg@10 {result['pipeline']['ndcg@10']:.4f} on {int(result['pipeline']['eval_users'])} "
                  f"sampled test users; wrote {RESULT.relative_to(ROOT)}")  # fmt: skip


if __name__ == "__main__":
    main()
