"""Contracts of the real-time Redis state shared by its writers (feedback, personalization) and readers.

Owns three small things that writer and reader must agree on:

* **Log-space exponential decay.** A decayed count ``Σₖ wₖ · 2^(-(now - tₖ)/h)`` changes every
  instant; rewriting every item to age it is out of the question. Instead each event adds
  ``wₖ · exp((tₖ - T0)/τ)`` (``τ = h / ln 2``, ``T0`` a fixed epoch) and the sum is stored as its
  natural log: ``s = ln Σₖ wₖ · exp((tₖ - T0)/τ)``. Every member decays by the same factor, so a
  sorted set ordered by ``s`` is always ordered by the decayed count (``ZREVRANGE`` just works)
  and the count at time ``now`` is ``exp(s - (now - T0)/τ)`` (:func:`decayed`). Storing the log
  (merged with log-add-exp, :data:`LOGADDEXP_ZSET_LUA`) never overflows: ``s`` grows by one per
  ``τ`` of wall-clock time. Only positive weights can be stored.
* **Who acts.** :func:`actor_id`: an anonymous interaction (empty ``user_id`` or context
  ``anonymous=true``) is attributed to its ``session_id``, which then *is* the user id of every
  per-user key (recommendations for an anonymous visitor are asked for by session id).
* **Recent-items entries**: JSON ``{"item", "type", "ts"}``, newest first (:func:`recent_entry`).
* **Item categories** in ``Keys.item_meta``: field ``categories`` holds a JSON list
  (:func:`encode_categories` / :func:`parse_categories`).

Personalization's category affinities (``Keys.affinity``) hold log-space scores too, with the
half-life of ``personalization.affinity_half_life_s``.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

#: Fixed reference epoch of the log-space scores (2024-01-01T00:00:00Z, epoch ms).
T0_MS = 1_704_067_200_000
LN2 = math.log(2.0)


def tau_ms(half_life_s: float) -> float:
    """The e-folding time in ms of a half-life given in seconds."""
    return half_life_s * 1000.0 / LN2


def log_weight(weight: float, ts_ms: int, half_life_s: float) -> float:
    """``ln(w · exp((t - T0)/τ))``, the log-space contribution of one event (``weight`` > 0)."""
    return math.log(weight) + (ts_ms - T0_MS) / tau_ms(half_life_s)


def logaddexp(a: float | None, b: float) -> float:
    """``ln(eᵃ + eᵇ)`` without overflow; ``a`` None means an empty sum."""
    if a is None:
        return b
    hi, lo = (a, b) if a >= b else (b, a)
    return hi + math.log1p(math.exp(lo - hi))


def decayed(score: float, now_ms: int, half_life_s: float) -> float:
    """The decayed count at ``now_ms`` of a stored log-space score."""
    return math.exp(score - (now_ms - T0_MS) / tau_ms(half_life_s))


#: Merge log-space scores into sorted sets, trim and expire them, atomically.
#: KEYS: the sorted sets. ARGV[1] = cap (members kept, highest scores), ARGV[2] = TTL seconds,
#: then triplets (1-based key index, member, log-space value).
LOGADDEXP_ZSET_LUA = """
local cap = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local key = KEYS[tonumber(ARGV[i])]
  local member = ARGV[i + 1]
  local x = tonumber(ARGV[i + 2])
  local old = redis.call('ZSCORE', key, member)
  if old then
    old = tonumber(old)
    local hi, lo = old, x
    if x > old then hi, lo = x, old end
    x = hi + math.log(1 + math.exp(lo - hi))
  end
  redis.call('ZADD', key, x, member)
end
for _, key in ipairs(KEYS) do
  local n = redis.call('ZCARD', key)
  if n > cap then redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1) end
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return #KEYS
"""


def actor_id(user_id: str, session_id: str | None, context: dict[str, str] | None) -> str | None:
    """The id whose per-user state an interaction updates (None: nobody to attribute it to)."""
    anonymous = not user_id or (context or {}).get("anonymous", "").lower() in ("1", "true", "yes")
    if anonymous:
        return session_id or None
    return user_id


def recent_entry(item_id: str, event_type: str, ts_ms: int) -> bytes:
    """One element of a recent-items list."""
    return orjson.dumps({"item": item_id, "type": event_type, "ts": int(ts_ms)})


def parse_recent(raw: bytes | str) -> dict[str, Any]:
    """Inverse of :func:`recent_entry` (tolerates a bare item id)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "item" in doc:
        return doc
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return {"item": text, "type": "view", "ts": 0}


def encode_categories(categories: list[str]) -> bytes:
    """The ``categories`` field of ``Keys.item_meta``."""
    return orjson.dumps(list(categories))


def parse_categories(raw: bytes | str | None) -> list[str]:
    """Inverse of :func:`encode_categories` (a comma-separated list is tolerated)."""
    if not raw:
        return []
    try:
        doc = orjson.loads(raw)
        if isinstance(doc, list):
            return [str(c) for c in doc]
    except orjson.JSONDecodeError:
        pass
    text = raw.decode() if isinstance(raw, bytes) else raw
    return [c.strip() for c in text.split(",") if c.strip()]
