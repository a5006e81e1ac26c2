"""Personalization's pure logic: the ALS fold-in (exact least squares), the trained-vector prior,
the mean encoder, recent-list and affinity planning, which published model versions are acted upon."""

from __future__ import annotations

import numpy as np
import pytest

from recmesh.core.artifacts import ModelArtifact, fold_in_als
from recmesh.core.bus import Record
from recmesh.core.errors import TransientError
from recmesh.core.events import Interaction, ModelPublished
from recmesh.core.realtime import T0_MS, decayed, parse_recent, recent_entry
from recmesh.core.settings import RedisSettings
from recmesh.personalization.handlers import (
    LiveModel,
    ModelBook,
    PersonalizationHandler,
    encode_user,
    fold_in_with_prior,
    newest_publishes,
    plan_user,
)
from recmesh.personalization.settings import PersonalizationSection


def als_artifact(n_items: int = 30, dim: int = 6, users: bool = False, encoder: dict | None = None) -> ModelArtifact:
    rng = np.random.default_rng(7)
    y = rng.normal(scale=0.3, size=(n_items, dim)).astype(np.float32)
    return ModelArtifact(
        name="als", kind="vectors", item_ids=[f"i{j}" for j in range(n_items)], popularity=np.ones(n_items),
        item_vectors=y, encoder=encoder or {"type": "als_fold_in", "regularization": 0.1, "alpha": 2.0},
        user_ids=["known"] if users else None,
        user_vectors=rng.normal(size=(1, dim)).astype(np.float32) if users else None,
        data_range={"max_timestamp": 1_000},
    )  # fmt: skip


def direct_least_squares(y: np.ndarray, conf: dict[int, float], reg: float, alpha: float) -> np.ndarray:
    """argmin Σᵢ cᵢ(pᵢ - x·yᵢ)² + λ|x|² over *all* items, solved as one weighted lstsq."""
    c = np.ones(len(y))
    p = np.zeros(len(y))
    for i, w in conf.items():
        c[i], p[i] = alpha * w, 1.0
    a = np.vstack([np.sqrt(c)[:, None] * y, np.sqrt(reg) * np.eye(y.shape[1])])
    b = np.concatenate([np.sqrt(c) * p, np.zeros(y.shape[1])])
    return np.linalg.lstsq(a, b, rcond=None)[0]


def ev(item: str, ts: int, et: str = "click", eid: str = "") -> Interaction:
    return Interaction(eid or f"{item}{ts}{et}", "u", item, et, None, ts, tenant="t")


def test_encode_user_is_the_exact_least_squares_fold_in_for_an_unknown_user():
    art = als_artifact()
    s = PersonalizationSection()
    history = [{"item": "i3", "type": "click", "ts": 10}, {"item": "i5", "type": "purchase", "ts": 20},
               {"item": "i3", "type": "like", "ts": 30}, {"item": "nope", "type": "click", "ts": 40}]  # fmt: skip
    vec = encode_user(LiveModel("als", "v1", art), history, "stranger", s)
    # confidences: i3 = click 1 + like 3 (repeats add up), i5 = purchase 4; unknown items are ignored
    want = direct_least_squares(art.item_vectors.astype(np.float64), {3: 4.0, 5: 4.0}, 0.1, 2.0)
    np.testing.assert_allclose(vec, want, rtol=1e-4, atol=1e-5)


def test_fold_in_with_prior_reduces_to_the_plain_fold_in_and_keeps_the_prior_without_events():
    art = als_artifact()
    zero = np.zeros(art.dim, dtype=np.float32)
    plain = fold_in_als(art.item_vectors, [1, 2], [1.0, 3.0], 0.1, 2.0)
    np.testing.assert_allclose(fold_in_with_prior(art, zero, [1, 2], [1.0, 3.0]), plain, rtol=1e-5, atol=1e-6)
    prior = np.arange(art.dim, dtype=np.float32)
    np.testing.assert_allclose(fold_in_with_prior(art, prior, [], []), prior)


def test_known_user_folds_only_events_newer_than_the_training_data_on_top_of_the_trained_vector():
    art = als_artifact(users=True)
    s = PersonalizationSection()
    x0 = art.user_vectors[0]
    lm = LiveModel("als", "v1", art, trained_until_ms=1_000)
    old_only = [{"item": "i1", "type": "click", "ts": 900}]
    np.testing.assert_allclose(encode_user(lm, old_only, "known", s), x0)
    new = old_only + [{"item": "i2", "type": "click", "ts": 2_000}]
    got = encode_user(lm, new, "known", s)
    np.testing.assert_allclose(got, fold_in_with_prior(art, x0, [2], [1.0]), rtol=1e-6)
    assert not np.allclose(got, x0)
    # switched off: the plain fold-in over the whole recent history
    plain = encode_user(lm, new, "known", PersonalizationSection(fold_in_prior=False))
    np.testing.assert_allclose(plain, fold_in_als(art.item_vectors, [1, 2], [1.0, 1.0], 0.1, 2.0), rtol=1e-5)


def test_mean_encoder_is_the_weighted_mean_of_item_vectors():
    art = als_artifact(encoder={"type": "mean"})
    history = [{"item": "i0", "type": "click", "ts": 1}, {"item": "i1", "type": "purchase", "ts": 2}]
    vec = encode_user(LiveModel("m", "v", art), history, "u", PersonalizationSection())
    np.testing.assert_allclose(vec, (1 * art.item_vectors[0] + 4 * art.item_vectors[1]) / 5, rtol=1e-6)


def test_plan_user_pushes_oldest_first_caps_history_and_updates_affinities():
    art = als_artifact()
    s = PersonalizationSection(affinity_max_categories=2)
    now = T0_MS + 10_000
    old_recent = [recent_entry("i9", "view", now - 5000), recent_entry("i8", "view", now - 6000)]
    old_aff = {"weak": -1000.0}
    cats = {"i1": ["a", "b"], "i2": ["a"]}
    plan = plan_user("t", "u", [ev("i2", now), ev("i1", now - 10), ev("i7", now + 5, "dislike")], old_recent,
                     old_aff, lambda i: cats.get(i, []), [LiveModel("als", "v1", art)], s, recent_max=3)  # fmt: skip
    assert [parse_recent(p)["item"] for p in plan.push] == ["i1", "i2", "i7"]
    assert decayed(plan.affinity["a"], now, s.affinity_half_life_s) == pytest.approx(2.0, rel=1e-6)
    assert set(plan.affinity) == {"a", "b"} and plan.drop_categories == ["weak"]
    # the vector is computed over the list as it will be after LPUSH + LTRIM 3: i1, i2, i7 (not i9, i8)
    ((lm, vec),) = plan.vectors
    want = fold_in_als(art.item_vectors, [1, 2, 7], [1.0, 1.0, -2.0], 0.1, 2.0)
    np.testing.assert_allclose(vec, want, rtol=1e-5)


def test_torch_encoder_gets_the_positive_events_in_time_order():
    torch_encoder = pytest.importorskip("recmesh.core.torch_encoder")
    pytest.importorskip("torch")
    spec = {"dim": 8, "max_len": 6, "n_layers": 1, "n_heads": 2}
    blob = torch_encoder.state_bytes(torch_encoder.build(spec))
    base = als_artifact(dim=8)
    art = ModelArtifact(name="seq", kind="vectors", item_ids=base.item_ids, popularity=base.popularity,
                        item_vectors=base.item_vectors, encoder={"type": "torch", **spec},
                        blobs={"encoder.pt": blob})  # fmt: skip
    history = [{"item": "i4", "type": "purchase", "ts": 1}, {"item": "i2", "type": "dislike", "ts": 2},
               {"item": "i9", "type": "view", "ts": 3}]  # fmt: skip
    got = encode_user(LiveModel("seq", "v", art), history, "u", PersonalizationSection())
    want = torch_encoder.load_encoder(blob, spec).encode(art.item_vectors[[4, 9]])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- published models
def pub(name: str, version: str, offset: int = 0) -> Record[ModelPublished]:
    return Record("models", 0, offset, name, ModelPublished(name, version, f"/reg/{name}/{version}", "vectors"), 0)


class FakeRegistry:
    def __init__(self, champions: dict[str, str | None], fail: bool = False) -> None:
        self.champions, self.fail = champions, fail

    def champion(self, name: str):
        if self.fail:
            raise OSError("registry down")
        v = self.champions.get(name)
        return None if v is None else type("Info", (), {"version": v})()


def handler_with(registry, live: dict[str, str] | None = None, follow: tuple[str, ...] = ()):
    """A handler without Redis whose ``activate`` only records what it was asked to activate."""
    book = ModelBook(list(follow))
    for name, version in (live or {}).items():
        book.swap(LiveModel(name, version, als_artifact()))
    h = PersonalizationHandler(None, RedisSettings(), PersonalizationSection(), "t", models=book, registry=registry)
    h.activated = []
    h.activate = lambda name, version, uri: h.activated.append((name, version))
    return h


def test_newest_publishes_keeps_the_last_publish_per_followed_name():
    tombstone = Record("models", 0, 3, "x", None, 0)
    recs = [pub("als", "v1"), pub("bpr", "b1"), pub("als", "v2"), tombstone, pub("ease", "e1")]
    got = newest_publishes(recs, lambda n: n != "ease")
    assert [(e.name, e.version) for e in got] == [("als", "v2"), ("bpr", "b1")]


def test_only_the_newest_publish_that_is_the_registry_champion_is_activated():
    # a restart re-reads the retained history: v1 then v2, v2 champion → v2 only, v1 never
    h = handler_with(FakeRegistry({"als": "v2"}))
    h.handle_published([pub("als", "v1", 0), pub("als", "v2", 1)])
    assert h.activated == [("als", "v2")]
    # the history split over two polls: the superseded v1 alone is skipped too
    h = handler_with(FakeRegistry({"als": "v2"}))
    h.handle_published([pub("als", "v1", 0)])
    h.handle_published([pub("als", "v2", 1)])
    assert h.activated == [("als", "v2")]
    # already live (loaded from the registry at start): nothing to do
    h = handler_with(FakeRegistry({"als": "v2"}), live={"als": "v2"})
    h.handle_published([pub("als", "v1", 0), pub("als", "v2", 1)])
    assert h.activated == []
    # promoted then rolled back before we read either: the newest publish (the rollback) is live already
    h = handler_with(FakeRegistry({"als": "v2"}), live={"als": "v2"})
    h.handle_published([pub("als", "v3", 2)])
    assert h.activated == []
    # a model the registry has no champion for is not activated; without a registry the newest is trusted
    h = handler_with(FakeRegistry({}))
    h.handle_published([pub("als", "v1")])
    assert h.activated == []
    h = handler_with(None)
    h.handle_published([pub("als", "v1", 0), pub("als", "v2", 1)])
    assert h.activated == [("als", "v2")]


def test_an_unreadable_registry_is_a_transient_failure_not_a_guess():
    h = handler_with(FakeRegistry({"als": "v2"}, fail=True))
    with pytest.raises(TransientError):
        h.handle_published([pub("als", "v2")])
    assert h.activated == []
