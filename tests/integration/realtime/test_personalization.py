"""Personalization against the real broker, Redis and a registry on disk: fold-in, hot swap, replay,
no replay of superseded model versions at start."""

from __future__ import annotations

import numpy as np
import pytest

from recmesh.core.artifacts import ModelArtifact
from recmesh.core.events import Interaction, ItemUpdate, ModelPublished, now_ms
from recmesh.core.realtime import parse_recent, recent_entry
from recmesh.core.registry import Registry, VersionInfo
from recmesh.core.store import Keys
from recmesh.core.topics import CATALOG_ITEMS, INTERACTIONS, MODELS_PUBLISHED
from recmesh.personalization.app import PersonalizationService
from recmesh.personalization.settings import PersonalizationSettings
from tests.integration.realtime.util import produce, snapshot, wait_until

pytestmark = pytest.mark.integration
REG, ALPHA = 0.1, 2.0


def publish_als(registry_uri: str, version: str, users: list[str], seed: int, n_items: int = 40, dim: int = 8):
    rng = np.random.default_rng(seed)
    art = ModelArtifact(
        name="als", kind="vectors", item_ids=[f"i{j}" for j in range(n_items)], popularity=np.ones(n_items),
        item_vectors=rng.normal(scale=0.3, size=(n_items, dim)).astype(np.float32),
        user_ids=users, user_vectors=rng.normal(size=(len(users), dim)).astype(np.float32),
        encoder={"type": "als_fold_in", "regularization": REG, "alpha": ALPHA},
    )  # fmt: skip
    reg = Registry(registry_uri)
    uri = reg.version_uri("als", version)
    art.save(uri)
    reg.register(VersionInfo("als", version, uri, kind="vectors"))
    reg.set_champion("als", version)
    return art, uri


def direct_least_squares(y: np.ndarray, conf: dict[int, float]) -> np.ndarray:
    """argmin Σᵢ cᵢ(pᵢ - x·yᵢ)² + λ|x|² over every item (cᵢ = α·wᵢ for the user's items, else 1)."""
    y = y.astype(np.float64)
    c, p = np.ones(len(y)), np.zeros(len(y))
    for i, w in conf.items():
        c[i], p[i] = ALPHA * w, 1.0
    a = np.vstack([np.sqrt(c)[:, None] * y, np.sqrt(REG) * np.eye(y.shape[1])])
    return np.linalg.lstsq(a, np.concatenate([np.sqrt(c) * p, np.zeros(y.shape[1])]), rcond=None)[0]


def vec(client, key: str) -> np.ndarray | None:
    raw = client.get(key)
    return None if raw is None else np.frombuffer(raw, dtype=np.float32)


def test_fold_in_equals_least_squares_and_a_published_version_is_bulk_loaded_and_backfilled(
    settings_factory, redis_client, tenant, group_id
):
    """Exists because the user vector is what makes a click change recommendations: it must be the exact
    least-squares fold-in against the live model's item factors, the champion's own user vectors must be
    bulk-loaded at start, and a newly published version must go live (bulk load + backfill) without restart."""
    settings = settings_factory(PersonalizationSettings, personalization={"group_id": group_id})
    k = Keys(tenant)
    art1, _ = publish_als(settings.registry.uri, "v1", ["known1", "known2"], seed=1)
    t = now_ms()
    events = [("i3", "click"), ("i5", "purchase"), ("i3", "like"), ("i7", "view"), ("not-in-model", "click")]
    svc = PersonalizationService(settings).start()
    try:
        wait_until(lambda: svc.ready_check()[0], what="service ready")
        np.testing.assert_array_equal(vec(redis_client, k.user_vector("known1", "als", "v1")), art1.user_vectors[0])
        produce(settings, INTERACTIONS, [Interaction(f"e{n}", "stranger", item, et, None, t + n, tenant=tenant)
                                         for n, (item, et) in enumerate(events)])  # fmt: skip
        wait_until(lambda: redis_client.llen(k.recent_items("stranger")) == 5, what="events applied")
        got = vec(redis_client, k.user_vector("stranger", "als", "v1"))
        # i3: click 1 + like 3; i5: purchase 4; i7: view 0.5; the unknown item is ignored
        want = direct_least_squares(art1.item_vectors, {3: 4.0, 5: 4.0, 7: 0.5})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        recent = [parse_recent(r) for r in redis_client.lrange(k.recent_items("stranger"), 0, -1)]
        assert [(r["item"], r["type"]) for r in recent] == list(reversed(events))  # newest first

        art2, uri2 = publish_als(settings.registry.uri, "v2", ["known2"], seed=2)
        produce(settings, MODELS_PUBLISHED, [ModelPublished("als", "v2", uri2, "vectors", previous_version="v1")])
        wait_until(lambda: redis_client.exists(k.user_vector("stranger", "als", "v2")), what="v2 live")
        np.testing.assert_array_equal(vec(redis_client, k.user_vector("known2", "als", "v2")), art2.user_vectors[0])
        backfilled = vec(redis_client, k.user_vector("stranger", "als", "v2"))
        np.testing.assert_allclose(backfilled, direct_least_squares(art2.item_vectors, {3: 4.0, 5: 4.0, 7: 0.5}),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
        v1_before = redis_client.get(k.user_vector("stranger", "als", "v1"))
        produce(settings, INTERACTIONS, [Interaction("e9", "stranger", "i9", "click", None, t + 9, tenant=tenant)])
        wait_until(lambda: redis_client.llen(k.recent_items("stranger")) == 6, what="event after swap")
        np.testing.assert_allclose(vec(redis_client, k.user_vector("stranger", "als", "v2")),
                                   direct_least_squares(art2.item_vectors, {3: 4.0, 5: 4.0, 7: 0.5, 9: 1.0}),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
        assert redis_client.get(k.user_vector("stranger", "als", "v1")) == v1_before  # old version left to expire
    finally:
        svc.stop()


def test_replaying_every_interaction_changes_no_user_state(settings_factory, redis_client, tenant, group_id):
    """Exists because consumers are at-least-once: a rebalance or an operator's replay re-delivers events,
    and recent items, affinities and user vectors must come out exactly as after the first delivery —
    including anonymous sessions, whose session id stands for the user."""
    settings = settings_factory(PersonalizationSettings, personalization={"group_id": group_id})
    k = Keys(tenant)
    publish_als(settings.registry.uri, "v1", ["u0"], seed=3)
    produce(settings, CATALOG_ITEMS, [ItemUpdate(f"i{j}", tenant, None, [f"c{j % 3}"]) for j in range(40)])
    t = now_ms()
    evs = [Interaction(f"e{n}", f"u{n % 4}", f"i{(n * 7) % 40}", ("click", "view", "purchase")[n % 3], None, t + n,
                       tenant=tenant) for n in range(60)]  # fmt: skip
    evs += [Interaction(f"a{n}", "", f"i{n}", "click", None, t + 100 + n, "sess-9", tenant=tenant) for n in range(3)]
    svc = PersonalizationService(settings).start()
    try:
        wait_until(lambda: svc.ready_check()[0], what="service ready")
        produce(settings, INTERACTIONS, evs)
        wait_until(lambda: svc.handler.applied == len(evs), what="all applied")
    finally:
        svc.stop()
    before = snapshot(redis_client, tenant)
    assert redis_client.llen(k.recent_items("sess-9")) == 3 and redis_client.exists(k.affinity("u1"))
    assert len([key for key in before if ":vec:als:v1" in key]) == 5  # u0..u3 and the session
    replay = PersonalizationService(
        settings_factory(PersonalizationSettings, personalization={"group_id": group_id + "-replay"})
    ).start()
    try:
        wait_until(lambda: replay.runner.processed >= len(evs), what="replay consumed")
    finally:
        replay.stop()
    assert replay.handler.applied == 0
    assert snapshot(redis_client, tenant) == before


def test_a_restart_acts_only_on_the_champion_never_on_superseded_publishes(
    settings_factory, redis_client, tenant, group_id
):
    """Exists because the control consumer re-reads the whole retained models.published history at every
    start: a superseded version must not be loaded, bulk-loaded, backfilled or made live (not even briefly)
    — only the registry's champion is."""
    settings = settings_factory(PersonalizationSettings, personalization={"group_id": group_id})
    k = Keys(tenant)
    _, uri1 = publish_als(settings.registry.uri, "v1", ["known1", "known2"], seed=1)
    produce(settings, MODELS_PUBLISHED, [ModelPublished("als", "v1", uri1, "vectors")])
    art2, uri2 = publish_als(settings.registry.uri, "v2", ["known2"], seed=2)
    produce(settings, MODELS_PUBLISHED, [ModelPublished("als", "v2", uri2, "vectors", previous_version="v1")])
    # a user with recent items the models do not know: what a backfill would write a vector for
    redis_client.lpush(k.recent_items("stranger"), recent_entry("i3", "click", now_ms()))
    svc = PersonalizationService(settings)
    swapped: list[str] = []
    swap = svc.handler.models.swap
    svc.handler.models.swap = lambda lm: (swapped.append(lm.version), swap(lm))[1]
    svc.start()
    try:
        wait_until(lambda: svc.ready_check()[0] and svc.control.processed >= 2, what="both publishes consumed")
        assert svc.handler.models.get("als").version == "v2"
    finally:
        svc.stop()
    assert swapped == ["v2"]  # v1 was never live
    vec_keys = sorted(key for key in snapshot(redis_client, tenant) if ":vec:" in key)
    assert vec_keys == sorted([k.user_vector("known2", "als", "v2"), k.user_vector("stranger", "als", "v2")])
    np.testing.assert_array_equal(vec(redis_client, k.user_vector("known2", "als", "v2")), art2.user_vectors[0])
