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

    # The fold-in personalization runs per click solves Spark's own user equations (confidence
    # 1 + alpha·w, λ scaled by the user's item count): from a user's training row it gives back
    # (nearly: Spark's last user step saw the previous item factors) the user factor Spark learned.
    from recmesh.core.artifacts import fold_in_als

    m = split.train.matrix().tocsr()
    params = art.fold_in_params()
    implicit_style = {**params, "confidence_offset": 0.0, "reg_per_event": False}

    def cos(u: int, p: dict) -> float:
        row = m.getrow(u)
        v = fold_in_als(art.item_vectors, row.indices, row.data, **p)
        x = art.user_vectors[u]
        return float(v @ x / (np.linalg.norm(v) * np.linalg.norm(x) + 1e-12))

    users = [u for u in range(split.train.n_users) if m.getrow(u).nnz][:40]
    exact = np.median([cos(u, params) for u in users])
    assert exact > 0.97, exact
    assert exact > np.median([cos(u, implicit_style) for u in users])
