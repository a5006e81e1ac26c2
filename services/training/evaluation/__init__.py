"""Offline evaluation: full-ranking metrics, JSON results and the HTML report."""

from .evaluator import DEFAULT_KS, EvalConfig, EvalResult, evaluate
from .metrics import beyond_accuracy, popularity_deciles, ranking_metrics

__all__ = [
    "DEFAULT_KS",
    "EvalConfig",
    "EvalResult",
    "beyond_accuracy",
    "evaluate",
    "popularity_deciles",
    "ranking_metrics",
]
