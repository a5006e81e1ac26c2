"""Toy interaction data shared by the training-service unit tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recmesh.training.dataset import normalize_frame


def toy_frame(n_users: int = 60, n_items: int = 40, per_user: int = 12, seed: int = 0) -> pd.DataFrame:
    """Users with a taste for one of four item blocks, so a real model beats popularity."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        block = u % 4
        for j in range(per_user):
            if rng.random() < 0.8:
                item = block * (n_items // 4) + int(rng.integers(0, n_items // 4))
            else:
                item = int(rng.integers(0, n_items))
            rows.append((f"u{u}", f"i{item}", 1_700_000_000_000 + u * 1000 + j * 60_000, "click"))
    return normalize_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "event_type"]))


@pytest.fixture
def toy() -> pd.DataFrame:
    return toy_frame()
