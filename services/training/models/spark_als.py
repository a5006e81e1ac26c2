"""ALS on Apache Spark (``pyspark.ml.recommendation.ALS``) behind the common model interface.

For interaction data beyond one machine: the same implicit-feedback ALS as ``als`` (confidence
``1 + alpha·|w|``), distributed by Spark. The artifact is the usual ``vectors`` artifact with an
``als_fold_in`` encoder, so scoring and personalization cannot tell it from ``als``. The encoder
says ``confidence_offset: 1`` and ``reg_per_event: true``: Spark's confidence is ``1 + alpha·|w|``
(implicit's is ``alpha·w``) and it scales λ by each user's number of rated items (ALS-WR), so the
fold-in solves Spark's own user equations, not implicit's.

Here it runs ``local[*]`` with a 1 GiB driver and 4 shuffle partitions. To use a cluster, set
the master and resources through the training settings, e.g.::

    RECMESH_TRAINING__SPARK_MASTER=spark://spark-master:7077      # standalone cluster
    RECMESH_TRAINING__SPARK_MASTER=k8s://https://kubernetes.default.svc  # Spark on Kubernetes
    RECMESH_TRAINING__SPARK_DRIVER_MEMORY=4g
    RECMESH_TRAINING__SPARK_SHUFFLE_PARTITIONS=200
    recmesh train run --model spark_als --from-lake

(or pass ``{"master": ..., "spark_conf": {"spark.executor.memory": "8g", ...}}`` as params).
Executors need the same Python and pyspark version; on Kubernetes also set
``spark.kubernetes.container.image`` in ``spark_conf``. The lake should then live on storage
the executors can read (``s3://``), and reading it with ``spark.read.parquet`` is the natural
next step; today the driver builds the matrix and ships it to Spark.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import threading
import warnings
from typing import Any

import numpy as np
from pydantic import Field

from recmesh.core.artifacts import ModelArtifact

from ..dataset import Dataset
from .base import ModelConfig, build_artifact, register

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_SESSION: Any = None
_SESSION_KEY: tuple[Any, ...] | None = None


class SparkALSConfig(ModelConfig):
    """Implicit ALS on Spark (pyspark.ml)."""

    factors: int = Field(32, ge=1, description="Latent dimension (Spark's rank).")
    regularization: float = Field(0.05, ge=0, description="λ (Spark's regParam, scaled per rating count).")
    alpha: float = Field(2.0, gt=0, description="Confidence scale: c = 1 + alpha × |weight|.")
    iterations: int = Field(10, ge=1, description="ALS sweeps (Spark's maxIter).")
    binary: bool = Field(False, description="Use 1/0 interactions instead of the weighted matrix.")
    master: str = Field("local[*]", description="Spark master URL (local[*], spark://..., k8s://..., yarn).")
    driver_memory: str = Field("1g", description="spark.driver.memory.")
    shuffle_partitions: int = Field(4, ge=1, description="spark.sql.shuffle.partitions.")
    blocks: int = Field(4, ge=1, description="User and item blocks of the ALS solver (parallelism).")
    spark_conf: dict[str, str] = Field(default_factory=dict, description="Extra Spark settings.")


def spark_session(config: SparkALSConfig) -> Any:
    """A SparkSession for the config's master and resources, reused while they stay the same."""
    global _SESSION, _SESSION_KEY
    from pyspark.sql import SparkSession

    key = (config.master, config.driver_memory, config.shuffle_partitions, tuple(sorted(config.spark_conf.items())))
    with _LOCK:
        if _SESSION is not None and key == _SESSION_KEY:
            return _SESSION
        if _SESSION is not None:
            _SESSION.stop()
        builder = (
            SparkSession.builder.appName("recmesh-spark-als")
            .master(config.master)
            .config("spark.driver.memory", config.driver_memory)
            .config("spark.sql.shuffle.partitions", str(config.shuffle_partitions))
            .config("spark.default.parallelism", str(config.shuffle_partitions))
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .config("spark.driver.extraJavaOptions", "-Dlog4j2.level=ERROR")
        )
        for k, v in config.spark_conf.items():
            builder = builder.config(k, v)
        _SESSION = builder.getOrCreate()
        _SESSION.sparkContext.setLogLevel("ERROR")
        _SESSION_KEY = key
        return _SESSION


def stop_spark() -> None:
    """Stop the shared session (tests and the CLI call this at exit)."""
    global _SESSION, _SESSION_KEY
    with _LOCK:
        if _SESSION is not None:
            _SESSION.stop()
        _SESSION, _SESSION_KEY = None, None


def _factors(df: Any, n: int, dim: int) -> np.ndarray:
    """Spark's (id, features) factor frame → a dense [n, dim] array (missing ids stay zero)."""
    pdf = df.toPandas()
    out = np.zeros((n, dim), dtype=np.float32)
    if len(pdf):
        out[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    return out


def fit_spark_als(dataset: Dataset, config: SparkALSConfig) -> ModelArtifact:
    spark = spark_session(config)
    with warnings.catch_warnings():
        # pyspark warns about pandas >= 3 on every conversion; the two it does here are plain columns
        warnings.simplefilter("ignore", FutureWarning)
        return _fit(spark, dataset, config)


def _fit(spark: Any, dataset: Dataset, config: SparkALSConfig) -> ModelArtifact:
    import pandas as pd
    from pyspark.ml.recommendation import ALS

    m = (dataset.binary_matrix() if config.binary else dataset.matrix()).tocoo()
    pdf = pd.DataFrame({"u": m.row.astype(np.int32), "i": m.col.astype(np.int32), "w": m.data.astype(np.float32)})
    sdf = spark.createDataFrame(pdf).repartition(config.shuffle_partitions)
    als = ALS(
        rank=config.factors, maxIter=config.iterations, regParam=config.regularization, alpha=config.alpha,
        implicitPrefs=True, userCol="u", itemCol="i", ratingCol="w", seed=config.seed,
        numUserBlocks=config.blocks, numItemBlocks=config.blocks, coldStartStrategy="drop",
    )  # fmt: skip
    model = als.fit(sdf)
    items = _factors(model.itemFactors, dataset.n_items, config.factors)
    users = _factors(model.userFactors, dataset.n_users, config.factors)
    encoder = {"type": "als_fold_in", "regularization": config.regularization, "alpha": config.alpha,
               "confidence_offset": 1.0, "reg_per_event": True}  # fmt: skip
    art = build_artifact(
        "spark_als", "vectors", dataset, config, encoder,
        item_vectors=items, user_ids=[str(u) for u in dataset.user_ids], user_vectors=users,
    )  # fmt: skip
    art.extra["spark_master"] = config.master
    return art


if importlib.util.find_spec("pyspark") is not None and shutil.which("java") is not None:
    register("spark_als", SparkALSConfig, "Implicit ALS on Apache Spark (pyspark.ml; local[*] by default).")(
        fit_spark_als
    )
