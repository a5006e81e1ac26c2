"""ALS and BPR matrix factorisation from ``implicit`` (CPU models): the vector artifacts.

ALS users are encoded by the exact least-squares fold-in (what personalization runs per click);
BPR users by the same ridge fold-in over BPR's item factors, whose last column is the item bias.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from recmesh.core.artifacts import ModelArtifact

from ..dataset import Dataset
from .base import ModelConfig, build_artifact, limit_blas_threads, register


class ALSConfig(ModelConfig):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) via ``implicit.cpu.als``."""

    factors: int = Field(64, ge=1, description="Latent dimension.")
    regularization: float = Field(0.05, ge=0, description="L2 regularisation λ.")
    alpha: float = Field(2.0, gt=0, description="Confidence scale: c = alpha × interaction weight.")
    iterations: int = Field(15, ge=1, description="ALS sweeps.")
    binary: bool = Field(False, description="Use 1/0 interactions instead of the weighted matrix.")
    use_cg: bool = Field(True, description="Conjugate-gradient solver (faster) instead of Cholesky.")
    num_threads: int = Field(0, ge=0, description="implicit worker threads (0 = all cores).")


@register("als", ALSConfig, "Implicit ALS (implicit library, CPU).", baseline=True)
def fit_als(dataset: Dataset, config: ALSConfig) -> ModelArtifact:
    from implicit.cpu.als import AlternatingLeastSquares

    x = dataset.binary_matrix() if config.binary else dataset.matrix()
    with limit_blas_threads(1):
        model = AlternatingLeastSquares(
            factors=config.factors,
            regularization=config.regularization,
            alpha=config.alpha,
            iterations=config.iterations,
            use_cg=config.use_cg,
            num_threads=config.num_threads,
            random_state=config.seed,
        )
        model.fit(x.tocsr(), show_progress=False)
    encoder = {"type": "als_fold_in", "regularization": config.regularization, "alpha": config.alpha}
    return build_artifact(
        "als",
        "vectors",
        dataset,
        config,
        encoder,
        item_vectors=np.asarray(model.item_factors, dtype=np.float32),
        user_ids=[str(u) for u in dataset.user_ids],
        user_vectors=np.asarray(model.user_factors, dtype=np.float32),
    )


class BPRConfig(ModelConfig):
    """Bayesian Personalised Ranking (Rendle 2009) via ``implicit.cpu.bpr``."""

    factors: int = Field(64, ge=1, description="Latent dimension (implicit adds one bias column).")
    learning_rate: float = Field(0.01, gt=0, description="SGD learning rate.")
    regularization: float = Field(0.01, ge=0, description="L2 regularisation.")
    iterations: int = Field(200, ge=1, description="SGD epochs.")
    fold_in_regularization: float = Field(
        0.1, gt=0, description="Ridge λ of the least-squares fold-in that encodes users from history."
    )
    fold_in_alpha: float = Field(10.0, gt=0, description="Confidence scale of the fold-in.")


@register("bpr", BPRConfig, "Bayesian Personalised Ranking (implicit library, CPU).", baseline=True)
def fit_bpr(dataset: Dataset, config: BPRConfig) -> ModelArtifact:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    with limit_blas_threads(1):
        model = BayesianPersonalizedRanking(
            factors=config.factors,
            learning_rate=config.learning_rate,
            regularization=config.regularization,
            iterations=config.iterations,
            # Hogwild SGD over several threads is not reproducible; one thread keeps the seed meaningful.
            num_threads=1,
            random_state=config.seed,
        )
        model.fit(dataset.binary_matrix(), show_progress=False)
    encoder = {
        "type": "als_fold_in",
        "regularization": config.fold_in_regularization,
        "alpha": config.fold_in_alpha,
    }
    return build_artifact(
        "bpr",
        "vectors",
        dataset,
        config,
        encoder,
        item_vectors=np.asarray(model.item_factors, dtype=np.float32),
        user_ids=[str(u) for u in dataset.user_ids],
        user_vectors=np.asarray(model.user_factors, dtype=np.float32),
    )
