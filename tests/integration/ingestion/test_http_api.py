"""The HTTP front door against the real broker and Redis: what is accepted arrives, once, unchanged."""

from __future__ import annotations

import time

import orjson
import pytest

from recmesh.core.bus import Record
from recmesh.core.events import Interaction, ItemUpdate, UserUpdate, now_ms
from recmesh.core.topics import CATALOG_ITEMS, CATALOG_USERS, INTERACTIONS, catalog_key
from recmesh.ingestion.app import DUPLICATE, IN_FLIGHT, NEW, pending_ttl
from tests.integration.ingestion.conftest import read_topic, topic_count

pytestmark = pytest.mark.integration


def test_posted_events_arrive_decodable_and_unchanged(ingestion_factory, kafka_bootstrap, topics, tenant):
    """Exists because every downstream service trusts that ingestion writes exactly what the client sent."""
    client, _ = ingestion_factory()
    assert client.get("/readyz").json()["ready"] is True
    ts = now_ms() - 1000
    full = {"event_id": "e-full", "user_id": "u1", "item_id": "i1", "event_type": "rating", "value": 4.5,
            "timestamp": ts, "session_id": "s1", "request_id": "r1", "context": {"page": "home"}}  # fmt: skip
    r = client.post("/v1/events", json=[full, {"user_id": 2, "item_id": 3, "event_type": "click", "event_id": "e2",
                                               "timestamp": ts}])  # fmt: skip
    assert r.status_code == 202 and r.json() == {"accepted": 2, "duplicates": 0, "rejected": []}
    nd = b'{"user_id":"u3","item_id":"i3","event_type":"view","event_id":"e3","timestamp":%d}\n' % ts
    r = client.post("/v1/events", content=nd, headers={"content-type": "application/x-ndjson"})
    assert r.json()["accepted"] == 1
    r = client.post("/v1/events", json={"user_id": "u4", "item_id": "i4", "event_type": "purchase", "value": 9.99})
    assert r.status_code == 202
    generated = r.json()["event_id"]

    got = {v.event_id: (k, v) for k, v in read_topic(kafka_bootstrap, topics, INTERACTIONS, expect=4)}
    assert len(got) == 4
    assert got["e-full"] == ("u1", Interaction("e-full", "u1", "i1", "rating", 4.5, ts, "s1", "r1",
                                               {"page": "home"}, tenant, "api"))  # fmt: skip
    assert got["e2"] == ("2", Interaction("e2", "2", "3", "click", None, ts, tenant=tenant))
    assert got["e3"][1].item_id == "i3"
    k, ev = got[generated]
    assert (k, ev.event_type, ev.value, ev.tenant) == ("u4", "purchase", 9.99, tenant)
    assert abs(ev.timestamp - now_ms()) < 60_000  # server time


def test_mixed_batch_accepts_valid_and_names_rejected_indices(ingestion_factory, kafka_bootstrap, topics):
    """Exists because a batch must never be all-or-nothing: valid events go through, the rest are listed."""
    client, _ = ingestion_factory()
    ok = {"user_id": "u", "item_id": "i", "event_type": "view"}
    batch = [ok, {**ok, "colour": 1}, ok, {"user_id": "u"}, {**ok, "timestamp": now_ms() + 86_400_000}, ok, [1]]
    r = client.post("/v1/events", json=batch)
    assert r.status_code == 202
    body = r.json()
    assert body["accepted"] == 3 and body["duplicates"] == 0
    assert [x["index"] for x in body["rejected"]] == [1, 3, 4, 6]
    assert body["rejected"][0]["error"] == "unknown field 'colour'"
    assert len(read_topic(kafka_bootstrap, topics, INTERACTIONS, expect=3)) == 3
    single = client.post("/v1/events", json={**ok, "colour": 1})
    assert single.status_code == 422 and "colour" in single.json()["detail"]


def test_duplicate_event_id_produces_one_message(ingestion_factory, kafka_bootstrap, topics, redis_client, tenant):
    """Exists because clients retry: a repeated event_id must be accepted once and produced once."""
    client, settings = ingestion_factory()
    ev = {"event_id": "dup-1", "user_id": "u", "item_id": "i", "event_type": "click"}
    assert client.post("/v1/events", json=[ev, ev]).json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert client.post("/v1/events", json=ev).json()["duplicates"] == 1
    # Another tenant may use the same id.
    assert client.post("/v1/events", json={**ev, "tenant": "other-" + tenant}).json()["accepted"] == 1
    msgs = read_topic(kafka_bootstrap, topics, INTERACTIONS, expect=2)
    assert sorted(v.tenant for _, v in msgs) == sorted([tenant, "other-" + tenant])
    ttl = redis_client.ttl(f"rm:{tenant}:dd:ingestion:dup-1")
    assert 0 < ttl <= settings.ingestion.dedupe_ttl_s
    redis_client.delete(f"rm:other-{tenant}:dd:ingestion:dup-1")


def test_api_keys_and_tenant_scoping(ingestion_factory, tenant):
    """Exists because a key of one tenant must never write another tenant's events."""
    client, _ = ingestion_factory(auth={"api_keys": {"k-own": tenant, "k-all": "*"}})
    ev = {"user_id": "u", "item_id": "i", "event_type": "view"}
    assert client.post("/v1/events", json=ev).status_code == 401
    assert client.post("/v1/events", json=ev, headers={"x-api-key": "nope"}).status_code == 401
    own = {"x-api-key": "k-own"}
    assert client.post("/v1/events", json=ev, headers=own).status_code == 202  # tenant from the key
    assert client.post("/v1/events", json=ev, headers={**own, "x-tenant": "someone-else"}).status_code == 403
    r = client.post("/v1/events", json=[ev, {**ev, "tenant": "someone-else"}], headers=own)
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert client.put("/v1/items/x", json={"title": "t"}, headers={**own, "x-tenant": "zz"}).status_code == 403
    assert client.delete("/v1/items/x").status_code == 401
    r = client.post("/v1/events", json={**ev, "tenant": tenant}, headers={"x-api-key": "k-all"})
    assert r.status_code == 202


def test_body_limits_and_malformed_json(ingestion_factory):
    """Exists because oversized or broken bodies must be refused whole, with a usable reason."""
    client, _ = ingestion_factory(ingestion={"max_body_bytes": 2048, "max_batch": 3})
    ev = {"user_id": "u", "item_id": "i", "event_type": "view"}
    big = orjson.dumps([{**ev, "context": {"pad": "x" * 3000}}])
    r = client.post("/v1/events", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = client.post("/v1/events", json=[ev] * 4)
    assert r.status_code == 413 and "at most 3" in r.json()["detail"]
    r = client.post("/v1/events", content=b'[{"user_id": "u",, }]', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["details"] == {"position": 17, "line": 1, "column": 18}


def test_backpressure_refuses_before_enqueueing(ingestion_factory, kafka_bootstrap, topics, redis_client, tenant):
    """Exists because a 503 must mean nothing was taken: no message, and the event_id stays retryable."""
    client, _ = ingestion_factory(ingestion={"max_queue_depth": 2, "retry_after_s": 3})
    evs = [{"event_id": f"bp{i}", "user_id": "u", "item_id": "i", "event_type": "view"} for i in range(3)]
    r = client.post("/v1/events", json=evs)
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert redis_client.exists(f"rm:{tenant}:dd:ingestion:bp0") == 0
    assert client.post("/v1/events", json=evs[:2]).json()["accepted"] == 2
    assert topic_count(kafka_bootstrap, topics, INTERACTIONS) == 2


def test_catalog_upsert_batch_and_tombstone(ingestion_factory, kafka_bootstrap, topics, tenant):
    """Exists because catalog topics are compacted: upserts carry the entity, deletes a null value."""
    client, _ = ingestion_factory()
    r = client.put("/v1/items/sku1", json={"title": "Shoe", "categories": ["shoes"], "attributes": {"c": "red"}})
    assert r.status_code == 202, r.text
    r = client.post("/v1/items", json=[{"item_id": "sku2", "available": False}, {"title": "no id"}])
    assert r.json() == {"accepted": 1, "rejected": [{"index": 1, "error": "missing field 'item_id'"}]}
    assert client.delete("/v1/items/sku1").status_code == 202
    items = read_topic(kafka_bootstrap, topics, CATALOG_ITEMS, expect=3)
    by_key: dict[str, list] = {}
    for k, v in items:
        by_key.setdefault(k, []).append(v)
    first, tomb = by_key["sku1"]
    assert isinstance(first, ItemUpdate)
    assert (first.title, first.categories, first.tenant) == ("Shoe", ["shoes"], tenant)
    assert tomb is None
    assert by_key["sku2"][0].available is False
    nd = b'{"user_id": "u1", "segments": ["vip"]}\n{"user_id": "u2", "attributes": {"age": 30}}\n'
    r = client.post("/v1/users", content=nd, headers={"content-type": "application/x-ndjson"})
    assert r.json()["accepted"] == 2
    assert client.put("/v1/users/u3", json={"segments": ["new"]}).status_code == 202
    users = {k: v for k, v in read_topic(kafka_bootstrap, topics, CATALOG_USERS, expect=3)}
    assert isinstance(users["u2"], UserUpdate) and users["u2"].attributes == {"age": "30"}
    assert users["u1"].segments == ["vip"] and users["u3"].segments == ["new"]


def test_metrics_and_openapi(ingestion_factory):
    """Exists because operators scrape these counters and app developers read /docs."""
    client, _ = ingestion_factory()
    client.post("/v1/events", json=[{"user_id": "u", "item_id": "i", "event_type": "share"}, {"bad": 1}])
    text = client.get("/metrics").text
    assert 'recmesh_ingestion_events_accepted_total{event_type="share"}' in text
    assert 'recmesh_ingestion_events_rejected_total{reason="unknown_field"}' in text
    assert "recmesh_producer_queue_depth" in text
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-ndjson"} <= set(body)
    assert "202" in spec["paths"]["/v1/events"]["post"]["responses"]


@pytest.mark.parametrize("mode", ["script", "pipeline"])
def test_idempotency_claims_map_back_across_tenants(
    ingestion_factory, redis_client, tenant, mode, kafka_bootstrap, topics
):
    """Exists because the batch claim groups ids per tenant: answers must map back to the right events."""
    client, _ = ingestion_factory(ingestion={"dedupe_mode": mode})
    other = f"{tenant}-b"
    ev = {"user_id": "u", "item_id": "i", "event_type": "view"}
    client.post("/v1/events", json=[{**ev, "event_id": "a2"}, {**ev, "event_id": "b1", "tenant": other}])
    batch = [{**ev, "event_id": "a1"}, {**ev, "event_id": "b1", "tenant": other}, {**ev, "event_id": "a2"},
             {**ev, "event_id": "b2", "tenant": other}, {**ev, "event_id": "a1"}, {**ev, "event_id": "a3"}]  # fmt: skip
    r = client.post("/v1/events", json=batch).json()
    assert (r["accepted"], r["duplicates"]) == (3, 3)  # new: a1, b2, a3
    assert redis_client.exists(f"rm:{tenant}:dd:ingestion:a3") == 1
    assert redis_client.exists(f"rm:{other}:dd:ingestion:b2") == 1
    got = sorted((v.tenant, v.event_id) for _, v in read_topic(kafka_bootstrap, topics, INTERACTIONS, expect=5))
    assert got == sorted([(tenant, "a2"), (other, "b1"), (tenant, "a1"), (other, "b2"), (tenant, "a3")])
    redis_client.delete(*[f"rm:{other}:dd:ingestion:{i}" for i in ("b1", "b2")])


@pytest.mark.parametrize("mode", ["script", "pipeline"])
def test_a_claim_left_pending_by_a_crash_is_retryable_never_a_duplicate(
    ingestion_factory, kafka_bootstrap, topics, redis_client, tenant, mode
):
    """Exists because a process that dies between the Redis claim and the broker's ack must not
    turn the client's retry into a "duplicate": the event would never be produced."""
    client, settings = ingestion_factory(ingestion={"dedupe_mode": mode, "ack_timeout_s": 2.0, "retry_after_s": 2})
    dedupe = client.app.state.ingestion.dedupe
    key = f"rm:{tenant}:dd:ingestion:crash-1"
    # The crash: a request claimed the id and died before the broker acknowledged anything.
    claim = client.portal.call(dedupe.claim, [Interaction("crash-1", "u", "i", "view", tenant=tenant)])
    assert claim == [NEW]
    assert redis_client.get(key) == b"p" and 0 < redis_client.ttl(key) <= pending_ttl(2.0) < 86400

    ev = {"event_id": "crash-1", "user_id": "u", "item_id": "i", "event_type": "view"}
    single = client.post("/v1/events", json=ev)
    assert single.status_code == 503 and single.headers["retry-after"] == "2"
    assert single.json()["error"] == "in_flight" and "retry" in single.json()["detail"]
    r = client.post("/v1/events", json=[ev, {**ev, "event_id": "fresh-1"}]).json()
    assert (r["accepted"], r["duplicates"]) == (1, 0)
    assert [x["index"] for x in r["rejected"]] == [0] and "in flight" in r["rejected"][0]["error"]
    # An acknowledged id is done, with the full TTL.
    done = f"rm:{tenant}:dd:ingestion:fresh-1"
    assert redis_client.get(done) == b"1" and redis_client.ttl(done) > pending_ttl(2.0)

    redis_client.pexpire(key, 1)  # the dead request's pending claim runs out
    time.sleep(0.05)
    assert client.post("/v1/events", json=ev).json()["accepted"] == 1
    assert client.post("/v1/events", json=ev).json()["duplicates"] == 1
    assert redis_client.get(key) == b"1"
    got = sorted(v.event_id for _, v in read_topic(kafka_bootstrap, topics, INTERACTIONS, expect=2))
    assert got == ["crash-1", "fresh-1"]  # each produced exactly once


@pytest.mark.parametrize("mode", ["script", "pipeline"])
def test_claim_answers_new_duplicate_and_in_flight(ingestion_factory, redis_client, tenant, mode):
    """Exists because both claim modes (Lua script, plain pipeline) must give the same three answers."""
    client, _ = ingestion_factory(ingestion={"dedupe_mode": mode})
    dedupe = client.app.state.ingestion.dedupe
    evs = [Interaction(i, "u", "x", "view", tenant=tenant) for i in ("n1", "n2", "n1")]
    assert client.portal.call(dedupe.claim, evs) == [NEW, NEW, DUPLICATE]  # a repeat in the batch
    client.portal.call(dedupe.confirm, evs[:1])
    assert client.portal.call(dedupe.claim, evs[:2]) == [DUPLICATE, IN_FLIGHT]
    client.portal.call(dedupe.release, evs[:2])  # releases only the pending one
    assert redis_client.get(f"rm:{tenant}:dd:ingestion:n1") == b"1"
    assert redis_client.exists(f"rm:{tenant}:dd:ingestion:n2") == 0


def test_catalog_keys_are_tenant_qualified_so_a_delete_stays_in_its_tenant(
    ingestion_factory, kafka_bootstrap, topics, tenant
):
    """Exists because catalog topics are compacted and deleted by key: tenant B's DELETE (or a
    later upsert) of an id must never remove or overwrite tenant A's item with the same id."""
    from recmesh.scoring.catalog import Catalog

    other = f"{tenant}-b"
    client, _ = ingestion_factory(auth={"api_keys": {"k-a": tenant, "k-b": other}})
    a, b = {"x-api-key": "k-a"}, {"x-api-key": "k-b"}
    assert client.put("/v1/items/sku1", json={"title": "A shoe"}, headers=a).status_code == 202
    assert client.put("/v1/items/sku1", json={"title": "B shoe"}, headers=b).status_code == 202
    assert client.post("/v1/items", json=[{"item_id": "sku2"}], headers=b).json()["accepted"] == 1
    assert client.delete("/v1/items/sku1", headers=b).status_code == 202  # in the caller's tenant
    assert client.delete("/v1/users/u1", headers=b).status_code == 202
    assert client.delete("/v1/items/sku1", headers={**a, "x-tenant": other}).status_code == 403

    records = read_topic(kafka_bootstrap, topics, CATALOG_ITEMS, expect=4)
    b_key = catalog_key(other, "sku1", tenant)
    assert b_key != "sku1"
    assert sorted((k, v is None) for k, v in records) == sorted(
        [("sku1", False), (b_key, False), (b_key, True), (catalog_key(other, "sku2", tenant), False)]
    )
    assert read_topic(kafka_bootstrap, topics, CATALOG_USERS, expect=1) == [(catalog_key(other, "u1", tenant), None)]

    catalog = Catalog(default_tenant=tenant)  # what scoring makes of the topic
    catalog.apply([Record("items", 0, i, k, v, 0) for i, (k, v) in enumerate(records)])
    mine, theirs = catalog.snapshot.tenant(tenant), catalog.snapshot.tenant(other)
    assert mine.title("sku1") == "A shoe" and "sku1" not in mine.blocked
    assert "sku1" not in theirs.items and "sku1" in theirs.blocked and "sku2" in theirs.items
