"""Typed event objects, one per Avro record in ``schemas/`` (latest version).

Handlers receive these, never bytes. Field names and order mirror the newest schema
version; ``tests/unit/test_events.py`` fails when the two drift apart. Timestamps are epoch
milliseconds (``int``).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

EVENT_TYPES: tuple[str, ...] = (
    "view", "click", "add_to_cart", "purchase", "rating", "like", "dislike", "share", "skip",
)  # fmt: skip


def now_ms() -> int:
    """Current UTC time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """A random id for events and requests (UUID4 hex)."""
    return uuid.uuid4().hex


@dataclass(slots=True)
class Interaction:
    """A user's interaction with an item."""

    SCHEMA: ClassVar[str] = "recmesh.events.Interaction"
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    value: float | None = None
    timestamp: int = 0
    session_id: str | None = None
    request_id: str | None = None
    context: dict[str, str] = field(default_factory=dict)
    tenant: str = "default"
    source: str = "api"


@dataclass(slots=True)
class ItemUpdate:
    """Catalog item metadata (a tombstone on the topic deletes the item)."""

    SCHEMA: ClassVar[str] = "recmesh.events.ItemUpdate"
    item_id: str
    tenant: str = "default"
    title: str | None = None
    categories: list[str] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    available: bool = True
    created_at: int | None = None
    updated_at: int = 0


@dataclass(slots=True)
class UserUpdate:
    """User profile metadata."""

    SCHEMA: ClassVar[str] = "recmesh.events.UserUpdate"
    user_id: str
    tenant: str = "default"
    attributes: dict[str, str] = field(default_factory=dict)
    segments: list[str] = field(default_factory=list)
    created_at: int | None = None
    updated_at: int = 0


@dataclass(slots=True)
class ServedItem:
    """One ranked item of a served recommendation."""

    item_id: str
    score: float
    rank: int
    source: str


@dataclass(slots=True)
class RecommendationServed:
    """One recommendation response as served (an impression)."""

    SCHEMA: ClassVar[str] = "recmesh.events.RecommendationServed"
    request_id: str
    user_id: str
    tenant: str = "default"
    items: list[ServedItem] = field(default_factory=list)
    model_name: str | None = None
    model_version: str | None = None
    variant: str = "control"
    surface: str = "recommend"
    timestamp: int = 0

    def to_record(self) -> dict[str, Any]:
        rec = {name: getattr(self, name) for name in _FIELDS[RecommendationServed]}
        rec["items"] = [
            {"item_id": i.item_id, "score": i.score, "rank": i.rank, "source": i.source} for i in self.items
        ]
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> RecommendationServed:
        rec = dict(rec)
        rec["items"] = [ServedItem(**i) for i in rec["items"]]
        return cls(**rec)


@dataclass(slots=True)
class LabeledInteraction:
    """A training example from attributed feedback (1 = engaged after impression, 0 = ignored)."""

    SCHEMA: ClassVar[str] = "recmesh.events.LabeledInteraction"
    label_id: str
    user_id: str
    item_id: str
    tenant: str = "default"
    label: int = 0
    event_type: str | None = None
    request_id: str | None = None
    rank: int | None = None
    model_version: str | None = None
    variant: str | None = None
    impression_ts: int | None = None
    timestamp: int = 0


@dataclass(slots=True)
class ModelPublished:
    """A model version became champion (promotion or rollback)."""

    SCHEMA: ClassVar[str] = "recmesh.events.ModelPublished"
    name: str
    version: str
    artifact_uri: str
    kind: str
    action: str = "promote"
    previous_version: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: int = 0
    data_start: int | None = None
    data_end: int | None = None
    published_at: int = 0


EVENT_CLASSES: tuple[type[Any], ...] = (
    Interaction, ItemUpdate, UserUpdate, RecommendationServed, LabeledInteraction, ModelPublished,
)  # fmt: skip

# dataclasses.fields(), not __dataclass_fields__: the latter also lists the SCHEMA ClassVar.
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_CLASSES
}


def to_record(event: Any) -> dict[str, Any]:
    """Dataclass → Avro record dict (shallow, fast)."""
    cls = type(event)
    if cls in _CUSTOM_TO:
        return event.to_record()  # type: ignore[no-any-return]
    return {name: getattr(event, name) for name in _FIELDS[cls]}


def record_builder(cls: type[Any]) -> Callable[[dict[str, Any]], Any]:
    """The function turning a resolved record dict into ``cls`` (looked up once, not per message)."""
    custom = getattr(cls, "from_record", None)
    if custom is not None:
        return custom  # type: ignore[no-any-return]
    return lambda rec: cls(**rec)


def from_record(cls: type[Any], rec: dict[str, Any]) -> Any:
    """Avro record dict (already resolved to the newest schema) → dataclass."""
    return record_builder(cls)(rec)


# Looked up by class rather than with getattr on each event: a missing attribute is slow.
_CUSTOM_TO: frozenset[type[Any]] = frozenset(c for c in EVENT_CLASSES if hasattr(c, "to_record"))
