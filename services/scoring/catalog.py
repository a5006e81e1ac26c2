"""The catalog as scoring sees it: availability, categories and titles from ``catalog.items.v1``.

Every replica follows the compacted topic from the earliest offset with a group of its own,
so it holds the whole catalog. The consumer thread applies records to private dicts and then
publishes an immutable :class:`CatalogSnapshot` by one reference assignment; the request path
only ever reads a snapshot, so it needs no lock and never sees a half-applied batch.
A tombstone (null value) deletes the item in the tenant its key names (see
:func:`recmesh.core.topics.catalog_key`): it is blocked from every list of that tenant.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from recmesh.core.bus import Record
from recmesh.core.events import ItemUpdate
from recmesh.core.topics import parse_catalog_key

_NO_CATS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ItemMeta:
    title: str | None
    categories: frozenset[str]
    available: bool


@dataclass(frozen=True)
class TenantCatalog:
    """One tenant's catalog at one point in time (read-only)."""

    items: dict[str, ItemMeta] = field(default_factory=dict)
    blocked: frozenset[str] = frozenset()
    by_category: dict[str, frozenset[str]] = field(default_factory=dict)

    def categories_of(self, item_id: str) -> frozenset[str]:
        meta = self.items.get(item_id)
        return meta.categories if meta is not None else _NO_CATS

    def title(self, item_id: str) -> str:
        meta = self.items.get(item_id)
        return meta.title if meta is not None and meta.title else item_id


@dataclass(frozen=True)
class CatalogSnapshot:
    """Every tenant's catalog; ``version`` grows with each applied batch (cache key)."""

    version: int = 0
    tenants: dict[str, TenantCatalog] = field(default_factory=dict)

    def tenant(self, tenant: str) -> TenantCatalog:
        return self.tenants.get(tenant) or _EMPTY


_EMPTY = TenantCatalog()


class Catalog:
    """Applies catalog records and publishes snapshots (single writer: the consumer thread)."""

    def __init__(self, default_tenant: str = "default") -> None:
        self.default_tenant = default_tenant
        self.snapshot = CatalogSnapshot()
        self._items: dict[str, dict[str, ItemMeta]] = {}
        self._blocked: dict[str, set[str]] = {}
        self._cats: dict[str, dict[str, set[str]]] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def _remove(self, tenant: str, item_id: str) -> set[str]:
        old = self._items.get(tenant, {}).pop(item_id, None)
        if old is None:
            return set()
        for c in old.categories:
            self._cats[tenant][c].discard(item_id)
        return set(old.categories)

    def apply(self, records: Iterable[Record[ItemUpdate]]) -> None:
        """Batch handler for ``catalog.items.v1``."""
        with self._lock:
            touched: dict[str, set[str]] = {}
            for rec in records:
                ev = rec.value
                if ev is None:  # tombstone: delete in the tenant its key names (only there)
                    t, item_id = parse_catalog_key(rec.key or "", self.default_tenant)
                    touched.setdefault(t, set()).update(self._remove(t, item_id))
                    self._items.setdefault(t, {})
                    self._blocked.setdefault(t, set()).add(item_id)
                    continue
                t = ev.tenant or self.default_tenant
                cats = touched.setdefault(t, set())
                cats.update(self._remove(t, ev.item_id))
                meta = ItemMeta(ev.title, frozenset(ev.categories), bool(ev.available))
                self._items.setdefault(t, {})[ev.item_id] = meta
                tcats = self._cats.setdefault(t, {})
                for c in meta.categories:
                    tcats.setdefault(c, set()).add(ev.item_id)
                cats.update(meta.categories)
                blocked = self._blocked.setdefault(t, set())
                if meta.available:
                    blocked.discard(ev.item_id)
                else:
                    blocked.add(ev.item_id)
            if not touched:
                return
            old = self.snapshot
            tenants = dict(old.tenants)
            for t, cats in touched.items():
                prev = old.tenant(t)
                by_cat = dict(prev.by_category)
                for c in cats:
                    members = self._cats.get(t, {}).get(c)
                    if members:
                        by_cat[c] = frozenset(members)
                    else:
                        by_cat.pop(c, None)
                # items: a shallow copy so the snapshot never changes under a reader
                tenants[t] = TenantCatalog(dict(self._items.get(t, {})), frozenset(self._blocked.get(t, ())), by_cat)
            self.snapshot = CatalogSnapshot(old.version + 1, tenants)
