"""Experiments: sticky assignment of users to variants by a salted hash of the user id.

The same (salt, user) always lands in the same variant, on every replica and after restarts,
without storing assignments; changing the salt reshuffles. Traffic shares are relative
weights over the variants in name order.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right

from recmesh.core.errors import ValidationError
from recmesh.scoring.settings import ExperimentConfig, VariantConfig


def bucket(salt: str, user_id: str) -> float:
    """A uniform number in [0, 1) from the salted user id (blake2b, first 8 bytes)."""
    h = hashlib.blake2b(f"{salt}\x1f{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


class Experiments:
    """Variant lookup and assignment for one experiment config."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        self.names = sorted(config.variants)
        total = sum(config.variants[n].traffic for n in self.names)
        acc, cuts = 0.0, []
        for n in self.names:
            acc += config.variants[n].traffic / total
            cuts.append(acc)
        cuts[-1] = 1.0
        self._cuts = cuts
        self.default = self.names[0] if len(self.names) == 1 else None

    def assign(self, user_id: str) -> str:
        """The user's variant (sticky)."""
        if len(self.names) == 1:
            return self.names[0]
        return self.names[min(bisect_right(self._cuts, bucket(self.config.salt, user_id)), len(self.names) - 1)]

    def resolve(self, user_id: str | None, forced: str | None) -> tuple[str, VariantConfig]:
        """A forced variant (422 if unknown) or the user's assignment (the first variant without a user)."""
        if forced:
            v = self.config.variants.get(forced)
            if v is None:
                raise ValidationError(f"unknown variant {forced!r} (known: {', '.join(self.names)})")
            return forced, v
        name = self.assign(user_id) if user_id else self.names[0]
        return name, self.config.variants[name]
