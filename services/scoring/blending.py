"""Candidate blending: weighted reciprocal-rank fusion of the candidate sources.

Each source (model retrieval, co-visitation of the user's recent items, trending, popular)
gives a ranked list; an item's blended score is ``Σ_s w_s / (k0 + rank_s)`` with per-variant
weights ``w_s`` (rank 1-based, ``k0 = 60`` as in Cormack et al.). Rank fusion needs no score
calibration between sources, which is why it is the default ensemble of the seed systems.
The item keeps the source that contributed most, and that source's reference (e.g. the
recent item a co-visited item came from) for the explanation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

RRF_K0 = 60.0


@dataclass(slots=True)
class Candidate:
    """One blended candidate. ``ref`` is what explains it (source item id, category, ...)."""

    item_id: str
    score: float
    source: str
    ref: str | None = None
    contribution: float = 0.0


SourceList = Sequence[tuple[str, str | None]]


def rrf_blend(sources: Mapping[str, SourceList], weights: Mapping[str, float], k0: float = RRF_K0) -> list[Candidate]:
    """Fuse ranked lists ``{source: [(item_id, ref), ...]}`` into candidates, best first.

    Sources with weight 0 (or missing from ``weights``) are ignored; an item listed twice by
    one source counts at its best rank. Ties keep the order of first appearance, so the result
    is deterministic.
    """
    out: dict[str, Candidate] = {}
    for name, items in sources.items():
        w = float(weights.get(name, 0.0))
        if w <= 0 or not items:
            continue
        seen_here: set[str] = set()
        for rank, (item_id, ref) in enumerate(items, start=1):
            if item_id in seen_here:
                continue
            seen_here.add(item_id)
            c = w / (k0 + rank)
            cand = out.get(item_id)
            if cand is None:
                out[item_id] = Candidate(item_id, c, name, ref, c)
            else:
                cand.score += c
                if c > cand.contribution:
                    cand.source, cand.ref, cand.contribution = name, ref, c
    # dicts keep insertion order and sorted() is stable: ties stay in first-appearance order
    return sorted(out.values(), key=lambda cd: -cd.score)
