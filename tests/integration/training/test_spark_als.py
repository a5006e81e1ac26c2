"""Spark ALS runs for real (local JVM) behind the common model interface."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pyspark")

from recmesh.training.dataset import Dataset, split_dataset  # noqa: E402
from recmesh.training.evaluation.evaluator import evaluate  # noqa: E402
from recmesh.training.models import REGISTRY, fit_model  # noqa: E402

pytestmark = pytest.mark.slow


def test_spark_als_fits_and_beats_popularity_on_block_data():
    """Exists because Spark ALS is the path beyond one machine: same artifact contract, real quality."""
    if "spark_als" not in REGISTRY:
        pytest.skip("no Java runtime for Spark")
    from recmesh.training.models.spark_als import stop_spark
    from tests.unit.training_service.conftest import toy_frame

    split = split_dataset(Dataset.from_frame(toy_frame(n_users=80)), "per-user-temporal:0.2")
    try:
        art = fit_model("spark_als", split.train, {"factors": 8, "iterations": 5, "shuffle_partitions": 2,
                                                   "blocks": 2, "master": "local[2]"})  # fmt: skip
    finally:
        stop_spark()
    assert art.kind == "vectors" and art.item_vectors.shape == (split.train.n_items, 8)
    assert art.encoder["type"] == "als_fold_in" and np.isfinite(art.item_vectors).all()
    assert art.user_vectors.shape == (split.train.n_users, 8)
    pop = evaluate(fit_model("popularity", split.train), split).metrics["ndcg@10"]
    assert evaluate(art, split).metrics["ndcg@10"] > pop
