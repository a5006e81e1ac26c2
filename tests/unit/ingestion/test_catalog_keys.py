"""Catalog keys: one function pair builds and reads them, the default tenant keeps bare ids, and
every other tenant's key names its tenant, so a tombstone or compaction stays in one tenant."""

from __future__ import annotations

import pytest

from recmesh.core.bus import Record
from recmesh.core.events import ItemUpdate
from recmesh.core.topics import CATALOG_ITEMS, CATALOG_KEY_SEP, catalog_key, parse_catalog_key
from recmesh.ingestion.handlers import Reject, validate_item


@pytest.mark.parametrize(
    ("tenant", "entity", "key"),
    [
        ("default", "sku-1", "sku-1"),  # compatible with records written before qualification
        (None, "sku-1", "sku-1"),
        ("shop2", "sku-1", "shop2\x1fsku-1"),
        ("shop2", "a/b:c", "shop2\x1fa/b:c"),
        ("default", "odd\x1fid", "default\x1fodd\x1fid"),  # a bare id with the separator would misparse
        ("shop2", "", "shop2\x1f"),
    ],
)
def test_catalog_key_round_trip(tenant: str | None, entity: str, key: str) -> None:
    assert catalog_key(tenant, entity, "default") == key
    assert parse_catalog_key(key, "default") == (tenant or "default", entity)


def test_two_tenants_never_share_a_key_and_a_bad_tenant_is_refused() -> None:
    assert catalog_key("a", "x", "default") != catalog_key("b", "x", "default") != "x"
    assert parse_catalog_key("x", "mine") == ("mine", "x")
    with pytest.raises(ValueError, match="separator"):
        catalog_key(f"a{CATALOG_KEY_SEP}b", "x", "default")
    with pytest.raises(Reject, match="control characters"):
        validate_item({"item_id": "x", "tenant": "a\x1fb"}, "default", 0)


def test_scoring_catalog_deletes_only_in_the_tombstones_tenant() -> None:
    from recmesh.scoring.catalog import Catalog

    cat = Catalog(default_tenant="default")
    recs = [ItemUpdate("x", "default", "D"), ItemUpdate("x", "shop2", "S"), ItemUpdate("y", "shop2", "Y")]
    cat.apply([Record("t", 0, i, catalog_key(ev.tenant, ev.item_id, "default"), ev, 0) for i, ev in enumerate(recs)])
    cat.apply([Record("t", 0, 3, catalog_key("shop2", "x", "default"), None, 0)])
    assert cat.snapshot.tenant("default").title("x") == "D"
    assert "x" not in cat.snapshot.tenant("shop2").items and "x" in cat.snapshot.tenant("shop2").blocked
    cat.apply([Record("t", 0, 4, "x", None, 0)])  # a bare key: the default tenant
    assert "x" not in cat.snapshot.tenant("default").items and "y" in cat.snapshot.tenant("shop2").items


def test_lake_tombstone_rows_name_the_tenant() -> None:
    lake = pytest.importorskip("recmesh.training.lake")
    row = lake._row(CATALOG_ITEMS.name, Record("t", 1, 7, catalog_key("shop2", "x", "default"), None, 5))
    assert (row["item_id"], row["tenant"], row["deleted"]) == ("x", "shop2", True)
    bare = lake._row(CATALOG_ITEMS.name, Record("t", 1, 8, "x", None, 5))
    assert (bare["item_id"], bare["tenant"]) == ("x", None)
