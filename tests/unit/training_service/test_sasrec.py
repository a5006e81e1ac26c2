"""The PyTorch sequential model: export format, order sensitivity, lazy torch, catalog re-indexing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")

from recmesh.core.artifacts import ModelArtifact  # noqa: E402
from recmesh.training.dataset import Dataset, split_dataset  # noqa: E402
from recmesh.training.evaluation.evaluator import evaluate  # noqa: E402
from recmesh.training.gate import align_artifact  # noqa: E402
from recmesh.training.models import fit_model  # noqa: E402

FAST = {"dim": 16, "max_len": 8, "n_layers": 1, "n_heads": 2, "epochs": 3, "batch_size": 32, "val_users": 20}


@pytest.fixture(scope="module")
def fitted():
    from tests.unit.training_service.conftest import toy_frame

    split = split_dataset(Dataset.from_frame(toy_frame()), "per-user-temporal:0.2")
    return split, fit_model("sasrec", split.train, FAST)


def test_exports_vectors_and_torch_encoder(fitted, tmp_path):
    split, art = fitted
    assert art.kind == "vectors" and art.item_vectors.shape == (split.train.n_items, 16)
    assert art.encoder["type"] == "torch" and "encoder.pt" in art.blobs
    art.save(str(tmp_path / "v1"))
    assert (tmp_path / "v1" / "encoder.pt").exists() and (tmp_path / "v1" / "item_vectors.npy").exists()
    back = ModelArtifact.load(str(tmp_path / "v1"))
    hist = np.array([3, 1, 4, 1, 5])
    np.testing.assert_allclose(back.score_history(hist), art.score_history(hist), atol=1e-5)


def test_user_vector_depends_on_order(fitted):
    _, art = fitted
    a = art.user_vector_from_history([1, 2, 3, 4])
    b = art.user_vector_from_history([4, 3, 2, 1])
    assert not np.allclose(a, b)
    # positional weights from history_weights order the history; zero weights (negatives) drop out
    w = art.history_weights(values=np.array([1.0, 1.0, -1.0, 1.0]))
    np.testing.assert_array_equal(w, [1, 2, 0, 4])
    np.testing.assert_allclose(art.user_vector_from_history([1, 2, 9, 3], w), art.user_vector_from_history([1, 2, 3]),
                               atol=1e-6)  # fmt: skip


def test_reindexed_catalog_scores_the_same(fitted):
    split, art = fitted
    perm = list(reversed(art.item_ids))
    al = align_artifact(art, perm)
    hist_ids = ["i3", "i7", "i1"]
    s1 = art.score_history([art.item_index[i] for i in hist_ids])
    s2 = al.score_history([al.item_index[i] for i in hist_ids])
    np.testing.assert_allclose(s2[::-1], s1, atol=1e-5)


def test_evaluates_through_the_shared_evaluator(fitted):
    split, art = fitted
    res = evaluate(art, split)
    assert 0.0 <= res.metrics["ndcg@10"] <= 1.0 and res.n_users > 0


def test_core_imports_do_not_need_torch():
    code = "import sys, recmesh.core.artifacts, recmesh.core.torch_encoder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
