"""Model registry: ``fit(dataset, config) -> ModelArtifact`` behind one name → (config, fit) table.

Built-in models register on import. Optional models (a PyTorch sequential model, ALS on Spark)
live in their own modules listed in ``_OPTIONAL``; each registers itself with
:func:`~recmesh.training.models.base.register` when imported, and is skipped when the module or
its heavy dependency (torch, pyspark) is not installed.
"""

from __future__ import annotations

import importlib

from . import factorization, neighborhood, recipes  # noqa: F401  (register the built-in models)
from .base import (
    REGISTRY,
    ModelConfig,
    ModelError,
    ModelSpec,
    fit_model,
    get_spec,
    make_config,
    register,
)

_OPTIONAL = ("recmesh.training.models.sasrec", "recmesh.training.models.spark_als")


def _load_optional() -> None:
    for module in _OPTIONAL:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            continue


_load_optional()


def model_names() -> list[str]:
    """Registered model names, ``default`` first."""
    return sorted(REGISTRY, key=lambda n: (n != "default", n))


def baseline_names() -> list[str]:
    """The plain classical models the default recipe is compared against."""
    return [n for n in model_names() if REGISTRY[n].baseline]


__all__ = [
    "REGISTRY",
    "ModelConfig",
    "ModelError",
    "ModelSpec",
    "baseline_names",
    "fit_model",
    "get_spec",
    "make_config",
    "model_names",
    "register",
]
