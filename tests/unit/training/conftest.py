"""Toy interaction data shared by the model, dataset and CLI tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recmesh.training.dataset import Dataset, normalize_frame, split_dataset


def toy_frame(n_users: int = 40, n_items: int = 30, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Two taste clusters (even/odd items) with time-ordered histories."""
    rng = np.random.default_rng(seed)
    rows = []
    t0 = 1_700_000_000_000
    for u in range(n_users):
        pool = np.arange(u % 2, n_items, 2)
        items = rng.choice(pool, size=min(per_user, pool.size), replace=False)
        for j, item in enumerate(items):
            rows.append((f"u{u}", f"i{item}", t0 + u * 1000 + j * 60_000, "click", np.nan))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type", "value"])


@pytest.fixture(scope="session")
def toy_dataset() -> Dataset:
    return Dataset.from_frame(normalize_frame(toy_frame()))


@pytest.fixture(scope="session")
def toy_split(toy_dataset: Dataset):
    return split_dataset(toy_dataset, "per-user-temporal:0.25")
