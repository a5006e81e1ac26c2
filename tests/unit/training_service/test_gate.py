"""Gate decisions, catalog alignment of a champion, all-or-nothing registration and promotion."""

from __future__ import annotations

import numpy as np
import pytest

from recmesh.core.artifacts import ModelArtifact
from recmesh.core.errors import Unavailable
from recmesh.core.registry import Registry
from recmesh.training import pipeline
from recmesh.training.gate import GateConfig, align_artifact, decide, promote, rollback

CFG = GateConfig(metric="ndcg@10", margin=0.05)


def test_first_version_is_promoted_when_above_minimum():
    assert decide({"ndcg@10": 0.1}, None, CFG).promote
    assert not decide({"ndcg@10": 0.0}, None, GateConfig(min_value=0.01)).promote


def test_candidate_must_beat_champion_by_the_margin():
    champ = {"ndcg@10": 0.20}
    assert not decide({"ndcg@10": 0.205}, champ, CFG).promote  # +2.5% < +5%
    assert not decide({"ndcg@10": 0.19}, champ, CFG).promote
    d = decide({"ndcg@10": 0.22}, champ, CFG, "v1")
    assert d.promote and d.champion == 0.20 and "v1" in d.reason


def test_nan_candidate_and_missing_metric():
    assert not decide({"ndcg@10": float("nan")}, None, CFG).promote
    with pytest.raises(KeyError):
        decide({"recall@10": 0.3}, None, CFG)


def test_zero_champion_needs_strictly_more():
    assert not decide({"ndcg@10": 0.0}, {"ndcg@10": 0.0}, CFG).promote
    assert decide({"ndcg@10": 0.01}, {"ndcg@10": 0.0}, CFG).promote


def _vec_art(ids, vecs):
    return ModelArtifact("m", "vectors", ids, np.arange(len(ids), dtype=np.float32) + 1,
                         item_vectors=np.asarray(vecs, dtype=np.float32))  # fmt: skip


def test_align_vectors_reorders_and_zeroes_unknown_items():
    art = _vec_art(["a", "b", "c"], [[1, 0], [0, 1], [1, 1]])
    al = align_artifact(art, ["c", "z", "a"])
    assert al.item_ids == ["c", "z", "a"]
    np.testing.assert_array_equal(al.item_vectors, [[1, 1], [0, 0], [1, 0]])
    np.testing.assert_array_equal(al.popularity, [3, 0, 1])
    assert align_artifact(art, ["a", "b", "c"]) is art


def test_align_neighbors_maps_indices_and_drops_unknown():
    art = ModelArtifact("m", "item_item", ["a", "b", "c"], np.ones(3, dtype=np.float32),
                        neighbors=np.array([[1, 2], [0, -1], [0, 1]]),
                        neighbor_scores=np.array([[0.5, 0.4], [0.5, -1], [0.4, 0.3]]))  # fmt: skip
    al = align_artifact(art, ["b", "a", "x"])
    # old a(0)->1, b(1)->0, c(2) gone
    np.testing.assert_array_equal(al.neighbors, [[1, -1], [0, -1], [-1, -1]])
    # scoring a history of "a" in the new order gives b its old a→b score
    s = al.score_history([1])
    assert s[0] == pytest.approx(0.5) and s[2] == 0


def test_align_dense_item_item():
    m = np.arange(9, dtype=np.float32).reshape(3, 3)
    art = ModelArtifact("m", "item_item", ["a", "b", "c"], np.ones(3, dtype=np.float32), item_item=m)
    al = align_artifact(art, ["c", "a"])
    np.testing.assert_array_equal(al.item_item, [[8, 6], [2, 0]])


def _req(path, **kw):
    return pipeline.TrainRequest("popularity", interactions=str(path), eval_max_users=50, **kw)


def test_failed_registration_leaves_no_version_and_champion_untouched(tmp_path, toy, monkeypatch):
    path = tmp_path / "inter.csv"
    toy.to_csv(path, index=False)
    reg = Registry(str(tmp_path / "reg"))
    first = pipeline.run_training(_req(path), reg)
    assert first.promoted

    def boom(self, info):
        raise OSError("disk full")

    monkeypatch.setattr(Registry, "register", boom)
    with pytest.raises(OSError):
        pipeline.run_training(_req(path), reg)
    monkeypatch.undo()
    assert [v.version for v in reg.versions("popularity")] == [first.version]
    assert reg.champion("popularity").version == first.version
    assert sorted(p.name for p in (tmp_path / "reg" / "popularity" / "versions").iterdir()) == [first.version]


def test_failed_fit_leaves_champion_and_versions_untouched(tmp_path, toy, monkeypatch):
    """A champion exists first, so a fit that fails has something it could have disturbed."""
    path = tmp_path / "inter.csv"
    toy.to_csv(path, index=False)
    reg = Registry(str(tmp_path / "reg"))
    first = pipeline.run_training(_req(path), reg)
    assert first.promoted
    state_before = reg.state("popularity")
    versions_before = reg.versions("popularity")

    def bad_fit(*a, **k):
        raise ValueError("diverged")

    monkeypatch.setattr(pipeline, "fit_model", bad_fit)
    with pytest.raises(ValueError, match="diverged"):
        pipeline.run_training(_req(path), reg)
    assert reg.state("popularity") == state_before
    assert reg.champion("popularity").version == first.version
    assert reg.versions("popularity") == versions_before
    # no half-written version directory either (a record-less directory is invisible to versions())
    assert sorted(p.name for p in (tmp_path / "reg" / "popularity" / "versions").iterdir()) == [first.version]


def _raise_unacked(event):
    raise Unavailable("models.published.v1 not acknowledged: timeout")


def test_failed_publish_restores_previous_champion(tmp_path, toy):
    """promote() moves the pointer before publishing; an unacknowledged publish must undo that."""
    path = tmp_path / "inter.csv"
    toy.to_csv(path, index=False)
    reg = Registry(str(tmp_path / "reg"))
    first = pipeline.run_training(_req(path), reg)
    second = pipeline.run_training(_req(path, promote=False), reg)
    state_before = reg.state("popularity")
    records_before = {v.version: v for v in reg.versions("popularity")}

    with pytest.raises(Unavailable):
        promote(reg, "popularity", second.version, _raise_unacked)
    assert reg.champion("popularity").version == first.version
    assert reg.state("popularity") == state_before
    assert {v.version: v for v in reg.versions("popularity")} == records_before

    # a publisher that works still promotes afterwards
    sent = []
    ev = promote(reg, "popularity", second.version, sent.append)
    assert reg.champion("popularity").version == second.version and sent == [ev]
    assert ev.previous_version == first.version


def test_failed_publish_on_rollback_keeps_current_champion(tmp_path, toy):
    path = tmp_path / "inter.csv"
    toy.to_csv(path, index=False)
    reg = Registry(str(tmp_path / "reg"))
    first = pipeline.run_training(_req(path), reg)
    second = pipeline.run_training(_req(path, promote=False), reg)
    promote(reg, "popularity", second.version, None)
    state_before = reg.state("popularity")
    records_before = {v.version: v for v in reg.versions("popularity")}

    with pytest.raises(Unavailable):
        rollback(reg, "popularity", _raise_unacked)
    assert reg.champion("popularity").version == second.version
    assert reg.state("popularity") == state_before
    assert {v.version: v for v in reg.versions("popularity")} == records_before
    assert rollback(reg, "popularity", None).version == first.version


def test_training_run_with_failed_publish_leaves_champion(tmp_path, toy):
    """The whole run: the gate passes (no champion yet) but the broker never acknowledges."""
    path = tmp_path / "inter.csv"
    toy.to_csv(path, index=False)
    reg = Registry(str(tmp_path / "reg"))
    with pytest.raises(Unavailable):
        pipeline.run_training(_req(path), reg, _raise_unacked)
    assert reg.champion("popularity") is None
    (version,) = reg.versions("popularity")
    assert version.status == "challenger" and "publish failed" in version.note


def test_gate_refuses_equal_model_on_same_split(tmp_path, toy):
    """Same model, same data, same split: equal metrics never clear a positive margin."""
    path = tmp_path / "inter.csv"
    toy.to_csv(path, index=False)
    reg = Registry(str(tmp_path / "reg"))
    pipeline.run_training(_req(path), reg)
    second = pipeline.run_training(_req(path), reg)
    assert not second.promoted and second.info.status == "challenger"
    assert second.info.note.startswith("refused")
    assert second.info.metrics["champion_ndcg@10"] == pytest.approx(second.metrics["ndcg@10"])
