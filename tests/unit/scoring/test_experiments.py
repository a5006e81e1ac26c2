"""Sticky, salted-hash variant assignment."""

from __future__ import annotations

import pytest

from recmesh.core.errors import ValidationError
from recmesh.scoring.experiments import Experiments, bucket
from recmesh.scoring.settings import ExperimentConfig, VariantConfig


def _exp(salt: str = "s1") -> Experiments:
    return Experiments(
        ExperimentConfig(salt=salt, variants={"a": VariantConfig(traffic=1), "b": VariantConfig(traffic=3)})
    )


def test_assignment_is_sticky_across_instances():
    users = [f"u{i}" for i in range(2000)]
    first = [_exp().assign(u) for u in users]
    assert first == [_exp().assign(u) for u in users]
    assert first == [_exp().assign(u) for u in users]


def test_traffic_shares_are_respected():
    got = [_exp().assign(f"user-{i}") for i in range(20_000)]
    share_b = got.count("b") / len(got)
    assert 0.72 < share_b < 0.78


def test_salt_reshuffles_users():
    users = [f"u{i}" for i in range(2000)]
    a = [_exp("s1").assign(u) for u in users]
    b = [_exp("s2").assign(u) for u in users]
    assert 0.2 < sum(x != y for x, y in zip(a, b, strict=True)) / len(users) < 0.6


def test_bucket_is_uniform_in_unit_interval():
    xs = [bucket("salt", str(i)) for i in range(10_000)]
    assert min(xs) >= 0 and max(xs) < 1
    assert 0.48 < sum(xs) / len(xs) < 0.52


def test_forced_variant_and_unknown_variant():
    e = _exp()
    assert e.resolve("u1", "a")[0] == "a"
    with pytest.raises(ValidationError, match="unknown variant"):
        e.resolve("u1", "nope")
    assert e.resolve("u1", None)[0] == e.assign("u1")
