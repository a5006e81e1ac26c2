"""The model interface: typed configs, the name → (config, fit) registry, artifact helpers.

Every model is a function ``fit(dataset, config) -> ModelArtifact`` registered under a name
with its pydantic config class (``extra="forbid"``, a description per field). Other modules add
models by decorating their fit function with :func:`register`; ``recmesh.training.models``
imports the built-in ones and, when present, the optional ones (PyTorch, Spark).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from recmesh import __version__
from recmesh.core.artifacts import Kind, ModelArtifact

from ..dataset import Dataset


class ModelError(ValueError):
    """Unknown model or invalid parameters (one-line message)."""


class ModelConfig(BaseModel):
    """Settings every model shares: the seed and how a user's history is weighted when scoring."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(42, description="Random seed; the same seed and data give the same artifact.")
    half_life: float | None = Field(
        None,
        gt=0,
        description=(
            "Recency half-life used when scoring a user's history: the newest event weighs 1, one "
            "half-life older weighs 0.5. None = all events weigh the same."
        ),
    )
    half_life_unit: Literal["events", "ms"] = Field(
        "events", description="Unit of half_life: positions in the history (events) or milliseconds."
    )
    recency_floor: float = Field(
        0.0, ge=0, le=1, description="Least weight of an old event under recency weighting (long-term share)."
    )
    popularity_blend: float = Field(
        0.0, ge=0, description="Weight of max-normalised popularity added to every score (0 = off)."
    )
    popularity_half_life_days: float | None = Field(
        None, gt=0, description="Half-life (days) of the popularity stored for fallbacks and blends."
    )


FitFn = Callable[[Dataset, Any], ModelArtifact]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model."""

    name: str
    config_cls: type[ModelConfig]
    fit: FitFn
    description: str
    baseline: bool  # a plain classical model the default recipe is compared against


REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str, config_cls: type[ModelConfig], description: str, baseline: bool = False
) -> Callable[[FitFn], FitFn]:
    """Decorator adding ``fit`` to the registry under ``name``."""

    def deco(fn: FitFn) -> FitFn:
        REGISTRY[name] = ModelSpec(name, config_cls, fn, description, baseline)
        return fn

    return deco


def get_spec(name: str) -> ModelSpec:
    """Look up a model; unknown names raise :class:`ModelError` listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r} (known: {', '.join(sorted(REGISTRY))})") from None


def make_config(name: str, params: dict[str, Any] | None = None) -> ModelConfig:
    """Validate ``params`` against the model's config; errors become one-line :class:`ModelError`."""
    spec = get_spec(name)
    try:
        return spec.config_cls(**(params or {}))
    except ValidationError as exc:
        problems = "; ".join(
            # a whole-config check (no field) reads "invalid params for sasrec: dim 30 is not ..."
            f"{'.'.join(map(str, e['loc'])) + ': ' if e['loc'] else ''}{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors(include_url=False)
        )
        raise ModelError(f"invalid params for {name}: {problems}") from None
    except TypeError as exc:
        raise ModelError(f"invalid params for {name}: {exc}") from None


def fit_model(name: str, dataset: Dataset, params: dict[str, Any] | ModelConfig | None = None) -> ModelArtifact:
    """Fit a registered model; records fit seconds in ``artifact.metrics['fit_seconds']``."""
    spec = get_spec(name)
    config = params if isinstance(params, ModelConfig) else make_config(name, params)
    if len(dataset) == 0:
        raise ModelError("cannot fit on an empty dataset")
    t0 = time.perf_counter()
    artifact = spec.fit(dataset, config)
    artifact.metrics.setdefault("fit_seconds", round(time.perf_counter() - t0, 4))
    if artifact.name != name:
        artifact.extra.setdefault("recipe", artifact.name)
        artifact.name = name
    return artifact


_CODE_VERSION: str | None = None


def code_version() -> str:
    """Package version plus the git commit when running from a checkout."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        sha = ""
        root = Path(__file__).resolve().parents[3]
        if (root / ".git").exists():
            try:
                sha = subprocess.run(
                    ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                sha = ""
        _CODE_VERSION = f"{__version__}+{sha}" if sha else __version__
    return _CODE_VERSION


def build_artifact(
    name: str,
    kind: Kind,
    dataset: Dataset,
    config: ModelConfig,
    encoder: dict[str, Any],
    **arrays: Any,
) -> ModelArtifact:
    """Common metadata (popularity, data range, hash, code version, recency settings) for a fit."""
    enc = dict(encoder)
    enc.setdefault("half_life", config.half_life)
    enc.setdefault("half_life_unit", config.half_life_unit)
    enc.setdefault("recency_floor", config.recency_floor)
    if config.popularity_blend:
        enc["popularity_blend"] = config.popularity_blend
    return ModelArtifact(
        name=name,
        kind=kind,
        item_ids=[str(i) for i in dataset.item_ids],
        popularity=dataset.item_popularity(config.popularity_half_life_days),
        params=config.model_dump(mode="json"),
        encoder=enc,
        data_range=dataset.data_range(),
        dataset_hash=dataset.content_hash(),
        code_version=code_version(),
        **arrays,
    )


def limit_blas_threads(n: int = 1) -> Any:
    """Context manager capping BLAS threads, as implicit recommends for its own parallel loops."""
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:  # pragma: no cover - threadpoolctl ships with scipy's stack
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def seeded_rng(config: ModelConfig) -> np.random.Generator:
    """A generator from the config's seed."""
    return np.random.default_rng(config.seed)
