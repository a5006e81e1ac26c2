"""The request pipeline without I/O: validation, user factors, cold start, rules, similar, popular."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recmesh.core.artifacts import ModelArtifact
from recmesh.core.bus import Record
from recmesh.core.errors import NotFound, PayloadTooLarge, ValidationError
from recmesh.core.events import ItemUpdate
from recmesh.core.registry import Registry
from recmesh.scoring.catalog import Catalog
from recmesh.scoring.engine import Engine, parse_recommend
from recmesh.scoring.experiments import Experiments
from recmesh.scoring.models import ModelHolder, prepare_model
from recmesh.scoring.settings import ExperimentConfig, ScoringSection, VariantConfig


def _artifact(n: int = 50, dim: int = 8) -> ModelArtifact:
    rng = np.random.default_rng(1)
    return ModelArtifact(
        name="default",
        kind="vectors",
        item_ids=[f"i{j}" for j in range(n)],
        popularity=np.arange(n, 0, -1, dtype=np.float32),  # i0 most popular
        item_vectors=rng.standard_normal((n, dim)).astype(np.float32),
        user_ids=["u1"],
        user_vectors=rng.standard_normal((1, dim)).astype(np.float32),
    )


def _engine(section: ScoringSection | None = None, catalog: Catalog | None = None) -> Engine:
    s = section or ScoringSection()
    holder = ModelHolder(Registry("memory://unused"), s)
    holder.install(prepare_model("default", "v1", _artifact(), s))
    return Engine(s, holder, catalog or Catalog(), None, Experiments(s.experiment), None, "default")


def _run(coro):
    return asyncio.run(coro)


def test_user_factors_rank_items_by_inner_product():
    e = _engine()
    art = e.models.get("default").artifact
    body = _run(e.recommend(parse_recommend(e.s, "u1", k=5)))
    expected = [art.item_ids[i] for i in np.argsort(-(art.item_vectors @ art.user_vectors[0]))[:5]]
    assert [i["item_id"] for i in body["items"]] == expected
    assert body["model_version"] == "v1" and body["variant"] == "control" and body["degraded"] is False
    assert [i["rank"] for i in body["items"]] == [1, 2, 3, 4, 5]
    assert {i["source"] for i in body["items"]} == {"model"}


def test_unknown_user_gets_cold_start_popular():
    e = _engine()
    body = _run(e.recommend(parse_recommend(e.s, "stranger", k=3)))
    assert [i["item_id"] for i in body["items"]] == ["i0", "i1", "i2"]
    assert body["items"][0]["source"] == "popular" and body["items"][0]["reason"] == "popular"


def test_exclude_include_and_boost_rules():
    e = _engine()
    base = [i["item_id"] for i in _run(e.recommend(parse_recommend(e.s, "u1", k=5)))["items"]]
    excl = _run(e.recommend(parse_recommend(e.s, "u1", k=5, exclude_items=base[:2])))["items"]
    assert [i["item_id"] for i in excl] == [x for x in _ranked(e) if x not in base[:2]][:5]
    inc = _run(e.recommend(parse_recommend(e.s, "u1", k=5, include_items=["i7", "i9", "i11"])))["items"]
    assert {i["item_id"] for i in inc} <= {"i7", "i9", "i11"} and len(inc) == 3
    last = _ranked(e)[-1]  # the worst item for u1, boosted far up
    boosted = _run(e.recommend(parse_recommend(e.s, "u1", k=5, boost_items={last: 1000.0})))["items"]
    assert boosted[0]["item_id"] == last


def _ranked(e: Engine) -> list[str]:
    art = e.models.get("default").artifact
    return [art.item_ids[i] for i in np.argsort(-(art.item_vectors @ art.user_vectors[0]))]


def test_category_filter_and_unavailable_items_from_catalog():
    cat = Catalog()
    ups = [ItemUpdate(f"i{j}", title=f"Item {j}", categories=["even" if j % 2 == 0 else "odd"]) for j in range(50)]
    ups[4] = ItemUpdate("i4", categories=["even"], available=False)
    cat.apply([Record("t", 0, j, u.item_id, u, 0) for j, u in enumerate(ups)])
    cat.apply([Record("t", 0, 99, "i6", None, 0)])  # tombstone: deleted
    e = _engine(catalog=cat)
    items = _run(e.recommend(parse_recommend(e.s, "u1", k=20, category="even")))["items"]
    ids = [i["item_id"] for i in items]
    assert ids and all(int(i[1:]) % 2 == 0 for i in ids)
    assert "i4" not in ids and "i6" not in ids
    with pytest.raises(ValidationError, match="unknown category"):
        _run(e.recommend(parse_recommend(e.s, "u1", category="nope")))
    sim = _run(e.similar("i2", 49))["items"]
    assert {"i4", "i6", "i2"}.isdisjoint(i["item_id"] for i in sim)


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"k": 0}, ValidationError),
        ({"k": 101}, ValidationError),
        ({"k": "3"}, ValidationError),
        ({"exclude_items": ["x"] * 501}, PayloadTooLarge),
        ({"include_items": [" padded "]}, ValidationError),
        ({"boost_items": {"a": -1.0}}, ValidationError),
    ],
)
def test_bad_input_is_rejected(kwargs, err):
    with pytest.raises(err):
        parse_recommend(ScoringSection(), "u1", **kwargs)


def test_malformed_user_ids():
    for bad in ("", " u", "u\n1", "x" * 300):
        with pytest.raises(ValidationError):
            parse_recommend(ScoringSection(), bad)


def test_variant_pins_blend_and_mmr():
    s = ScoringSection(
        experiment=ExperimentConfig(variants={"a": VariantConfig(), "div": VariantConfig(traffic=0, mmr_lambda=0.2)})
    )
    e = _engine(s)
    plain = _run(e.recommend(parse_recommend(s, "u1", k=5, variant="a")))
    div = _run(e.recommend(parse_recommend(s, "u1", k=5, variant="div")))
    assert plain["variant"] == "a" and div["variant"] == "div"
    assert [i["item_id"] for i in plain["items"]] != [i["item_id"] for i in div["items"]]
    assert plain["items"][0]["item_id"] == div["items"][0]["item_id"]  # MMR keeps the most relevant first


def test_similar_and_popular():
    e = _engine()
    art = e.models.get("default").artifact
    v = art.item_vectors / np.linalg.norm(art.item_vectors, axis=1, keepdims=True)
    expected = [art.item_ids[i] for i in np.argsort(-(v @ v[3])) if i != 3][:4]
    assert [i["item_id"] for i in _run(e.similar("i3", 4))["items"]] == expected
    with pytest.raises(NotFound):
        _run(e.similar("nope", 4))
    pop = _run(e.popular(3, "1h"))
    assert [i["item_id"] for i in pop["items"]] == ["i0", "i1", "i2"] and pop["items"][0]["source"] == "popular"
    with pytest.raises(ValidationError):
        _run(e.popular(3, "2w"))


class _RecentState:
    """A StateReader stand-in: the user's recent items (newest first), no vector, no co-visitation."""

    def __init__(self, recent: list[str]) -> None:
        self.recent = recent

    async def user_state(self, *args, **kwargs):
        from recmesh.scoring.state import UserState

        return UserState(recent=[(i, 1000 - n) for n, i in enumerate(self.recent)])

    async def covisit(self, *args, **kwargs):
        return []


def _content_engine(section: ScoringSection | None = None) -> Engine:
    """Model items i0..i49; catalog: i3 and the new items n1, n2 (unknown to the model) in "jazz"."""
    cat = Catalog()
    ups = [ItemUpdate(f"i{j}", title=f"Item {j}", categories=["jazz" if j in (3, 5) else "rock"]) for j in range(50)]
    ups += [ItemUpdate("n1", title="New 1", categories=["jazz"]), ItemUpdate("n2", categories=["jazz", "rock"])]
    ups += [ItemUpdate("n3", categories=["pop"])]
    cat.apply([Record("t", 0, j, u.item_id, u, 0) for j, u in enumerate(ups)])
    e = _engine(section, cat)
    e.state = _RecentState(["i3"])  # type: ignore[assignment]
    return e


def test_new_item_in_a_recent_category_reaches_recommendations_as_content():
    e = _content_engine()
    body = _run(e.recommend(parse_recommend(e.s, "u1", k=10)))
    items = {i["item_id"]: i for i in body["items"]}
    assert len(body["items"]) == 10
    new = [i for i in body["items"] if i["source"] == "content"]
    # default variant: content weight 0.3 and one slot per list of k >= 5, taken by a new jazz item
    assert len(new) == 1 and new[0]["item_id"] in {"n1", "n2"} and new[0]["rank"] == 10
    assert new[0]["reason"] == "new in jazz"
    assert "n3" not in items  # a new item outside the user's categories is not content
    assert all(i["source"] == "model" for i in body["items"][:9])
    # the user's own model list is kept otherwise: the slot replaces only its last entry
    assert [i["item_id"] for i in body["items"][:9]] == _ranked(e)[:9]


def test_content_source_is_bounded_by_weight_slots_and_filters():
    off = ScoringSection(experiment=ExperimentConfig(variants={"c": VariantConfig(content_slots=0)}))
    e = _content_engine(off)
    assert {i["source"] for i in _run(e.recommend(parse_recommend(off, "u1", k=10)))["items"]} == {"model"}
    e = _content_engine()
    assert len(_run(e.recommend(parse_recommend(e.s, "u1", k=4)))["items"]) == 4  # k < 5: no slot
    short = _run(e.recommend(parse_recommend(e.s, "u1", k=4)))["items"]
    assert all(i["source"] != "content" for i in short)
    # a stronger weight lets RRF rank new items without a slot; exclusions still apply
    strong = VariantConfig(blend={"model": 1.0, "content": 5.0})
    s = ScoringSection(experiment=ExperimentConfig(variants={"c": strong}))
    e = _content_engine(s)
    ids = [i["item_id"] for i in _run(e.recommend(parse_recommend(s, "u1", k=10)))["items"]]
    assert set(ids[:2]) == {"n1", "n2"}
    ids = [i["item_id"] for i in _run(e.recommend(parse_recommend(s, "u1", k=10, exclude_items=["n1"])))["items"]]
    assert "n1" not in ids and "n2" in ids
    with pytest.raises(ValueError, match="unknown blend sources"):
        VariantConfig(blend={"novel": 1.0})


def test_each_model_item_is_explained_by_the_recent_item_behind_it():
    """Reasons name the history item nearest to (vectors) or contributing most to (item-item) each
    recommendation, not one shared item for the whole list."""
    from recmesh.scoring.blending import Candidate
    from recmesh.scoring.engine import explain_model_candidates

    s = ScoringSection()
    e1, e2, e3 = np.eye(3, dtype=np.float32)
    vec = ModelArtifact(name="m", kind="vectors", item_ids=["h1", "h2", "a", "b"], popularity=np.ones(4, np.float32),
                        item_vectors=np.stack([e1, e2, e1 + 0.1 * e3, e2 + 0.1 * e3]))  # fmt: skip
    recent = [("h2", 2), ("h1", 1), ("unknown", 0)]  # newest first, as Redis holds them
    cands = [Candidate("a", 1.0, "model", "h2"), Candidate("b", 0.9, "model", "h2"), Candidate("x", 0.5, "trending")]
    explain_model_candidates(prepare_model("m", "v", vec, s), cands, recent)
    assert [c.ref for c in cands] == ["h1", "h2", None]

    sim = np.zeros((4, 4), dtype=np.float32)
    sim[0, 2], sim[1, 3], sim[1, 2] = 1.0, 1.0, 0.2  # h1 → a strongly; h2 → b, and a little → a
    ii = ModelArtifact(name="m", kind="item_item", item_ids=["h1", "h2", "a", "b"], popularity=np.ones(4, np.float32),
                       item_item=sim)  # fmt: skip
    cands = [Candidate("a", 1.0, "model", "h2"), Candidate("b", 0.9, "model", "h2")]
    explain_model_candidates(prepare_model("m", "v", ii, s), cands, recent)
    assert [c.ref for c in cands] == ["h1", "h2"]
    body = _run(_engine().recommend(parse_recommend(ScoringSection(), "u1", k=3)))
    assert all(it["reason"] for it in body["items"])
