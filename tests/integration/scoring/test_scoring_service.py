"""The scoring service against a real broker and Redis: hot swap, rules, impressions, gRPC/HTTP
parity, degraded mode."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
from confluent_kafka import Consumer

from recmesh.core.bus import EventProducer
from recmesh.core.codec import AvroCodec
from recmesh.core.events import ItemUpdate, RecommendationServed
from recmesh.core.store import Keys
from recmesh.core.topics import CATALOG_ITEMS, RECOMMENDATIONS_SERVED
from recmesh.scoring.proto import recommend_pb2 as pb
from recmesh.scoring.proto import recommend_pb2_grpc as pb_grpc
from tests.integration.scoring.conftest import free_port, make_artifact, register

pytestmark = pytest.mark.integration


def _ids(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def _wait(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_hot_swap_under_concurrent_requests(scoring_settings, serve, publish_model, tmp_path):
    """Exists because a model swap must never fail or stall requests, and every replica must pick up
    each publish: not ready without a model, ready after the first publish, v1 → v2 under load with
    zero errors, while a variant pinned to v1 keeps serving v1."""
    settings = scoring_settings(
        impressions=False,
        experiment={"variants": {"main": {}, "pinned": {"traffic": 0, "version": "v1"}}},
    )
    reg_uri = settings.registry.uri
    srv = serve(settings)
    assert httpx.get(srv.url + "/readyz").status_code == 503
    _wait(lambda: srv.runtime.runners and all(r.ready.is_set() for r, _ in srv.runtime.runners), what="assignment")

    uri1 = register(reg_uri, "v1", make_artifact(seed=1))
    publish_model("default", "v1", uri1)
    srv.wait_ready()
    assert httpx.get(srv.url + "/v1/users/u1/recommendations").json()["model_version"] == "v1"

    errors: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=srv.url, timeout=5) as c:
            n = 0
            while not stop.is_set():
                r = c.get(f"/v1/users/u{n % 50}/recommendations", params={"k": 10})
                n += 1
                if r.status_code != 200 or len(r.json()["items"]) != 10:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                else:
                    versions.append(r.json()["model_version"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    uri2 = register(reg_uri, "v2", make_artifact(seed=2))
    publish_model("default", "v2", uri2)
    _wait(lambda: versions and versions[-1] == "v2", what="v2 served")
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert versions[0] == "v1" and versions[-1] == "v2"
    first_v2 = versions.index("v2")
    assert set(versions[first_v2 + 50 :]) == {"v2"}  # once swapped, never back
    pinned = httpx.get(srv.url + "/v1/users/u1/recommendations", params={"variant": "pinned"}).json()
    assert pinned["model_version"] == "v1" and pinned["variant"] == "pinned"
    metrics = httpx.get(srv.url + "/metrics").text
    assert 'recmesh_scoring_model_version_info{model="default",version="v2"} 1.0' in metrics


def test_rules_grpc_parity_and_impressions(
    scoring_settings, serve, http, redis_client, tenant, topics, kafka_bootstrap, settings_factory, group_id
):
    """Exists because the rules read state other services write (Redis, catalog topic), gRPC must
    mean exactly what HTTP means, and every response must reach the impressions topic."""
    settings = scoring_settings(
        experiment={"variants": {"control": {"blend": {"model": 1.0, "covisit": 3.0, "trending": 0.3}}}}
    )
    art = make_artifact(seed=3)
    register(settings.registry.uri, "v1", art)
    # catalog: even items in "even", odd in "odd"; i1 unavailable; titles for reasons
    prod = EventProducer(settings.kafka, topics, client_id="test-catalog").start()
    for j in range(art.n_items):
        cats = ["even" if j % 2 == 0 else "odd"]
        prod.send(
            CATALOG_ITEMS, ItemUpdate(f"i{j}", tenant=tenant, title=f"Title {j}", categories=cats, available=j != 1)
        )
    assert prod.flush(10) == 0
    prod.close()
    srv = serve(settings)
    srv.wait_ready()
    _wait(lambda: len(srv.runtime.catalog.snapshot.tenant(tenant).items) == art.n_items, what="catalog")
    c = http(srv.url)
    keys = Keys(tenant)

    # the user's factors decide without Redis state; i1 (unavailable) never appears
    order = [art.item_ids[i] for i in np.argsort(-(art.item_vectors @ art.user_vectors[art.user_index["u2"]]))]
    base = c.get("/v1/users/u2/recommendations", params={"k": 10}).json()
    assert _ids(base) == [i for i in order if i != "i1"][:10]
    # exclude seen: the top 3 were seen → gone; exclude_seen=false brings them back
    redis_client.zadd(keys.seen("u2"), {i: 1 for i in _ids(base)[:3]})
    excl = c.get("/v1/users/u2/recommendations", params={"k": 10}).json()
    assert set(_ids(base)[:3]).isdisjoint(_ids(excl)) and _ids(excl)[:7] == _ids(base)[3:10]
    assert _ids(c.get("/v1/users/u2/recommendations", params={"k": 10, "exclude_seen": "false"}).json()) == _ids(base)
    # category filter
    odd = c.get("/v1/users/u2/recommendations", params={"k": 10, "category": "odd"}).json()
    assert len(odd["items"]) == 10 and all(int(i[1:]) % 2 == 1 for i in _ids(odd)) and "i1" not in _ids(odd)
    assert c.get("/v1/users/u2/recommendations", params={"category": "nope"}).status_code == 422
    # boosts and exclude list through POST
    worst = order[-1]
    boosted = c.post("/v1/recommendations", json={"user_id": "u2", "k": 5, "boost_items": {worst: 1e4},
                                                  "exclude_items": [_ids(excl)[0]]}).json()  # fmt: skip
    assert _ids(boosted)[0] == worst and _ids(excl)[0] not in _ids(boosted)
    # Redis user vector (personalization's) overrides the artifact's factors
    target = art.item_vectors[art.item_index["i42"]] * 10
    redis_client.set(keys.user_vector("u2", "default", "v1"), target.astype(np.float32).tobytes())
    assert _ids(c.get("/v1/users/u2/recommendations", params={"k": 3}).json())[0] == "i42"
    # cold start: unknown user gets trending (with reason), co-visitation of recent items
    redis_client.zadd(keys.trending("1d"), {"i7": 5, "i9": 3})
    cold = c.get("/v1/users/newbie/recommendations", params={"k": 5}).json()
    assert _ids(cold)[:2] == ["i7", "i9"] and cold["items"][0]["reason"] == "trending now"
    redis_client.lpush(keys.recent_items("newbie"), b'{"item": "i10", "type": "view", "ts": 1}')
    redis_client.zadd(keys.covisit("i10"), {"i20": 9, "i22": 4})
    cov = c.post("/v1/recommendations", json={"user_id": "newbie", "k": 10}).json()
    cov_items = {i["item_id"]: i for i in cov["items"] if i["source"] == "covisit"}
    assert "i20" in cov_items and cov_items["i20"]["reason"] == "similar to Title 10 you viewed"
    # batch
    batch = c.post("/v1/recommendations", json={"user_ids": ["u2", "u3", "newbie"], "k": 4}).json()
    assert [len(r["items"]) for r in batch["results"]] == [4, 4, 4]
    assert c.post("/v1/recommendations", json={"user_ids": [f"u{i}" for i in range(101)]}).status_code == 413
    assert c.post("/v1/recommendations", json={"user_id": "u2", "exclude_items": ["x"] * 501}).status_code == 413
    assert c.get("/v1/users/u2/recommendations", params={"k": 0}).status_code == 422
    assert c.get("/v1/users/u2/recommendations", params={"variant": "nope"}).status_code == 422

    # gRPC says the same as HTTP
    with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as ch:
        stub = pb_grpc.RecommendServiceStub(ch)
        for user, params in (("u2", {"k": 7}), ("u3", {"k": 5, "category": "even"}), ("newbie", {"k": 6})):
            h = c.get(f"/v1/users/{user}/recommendations", params=params).json()
            g = stub.Recommend(pb.RecommendRequest(user_id=user, **params))
            assert [i.item_id for i in g.items] == _ids(h)
            assert [(i.source, i.reason, i.rank) for i in g.items] == [
                (i["source"], i["reason"], i["rank"]) for i in h["items"]
            ]
            assert (g.model_version, g.variant, g.degraded) == (h["model_version"], h["variant"], h["degraded"])
        hs = c.get("/v1/items/i4/similar", params={"k": 5}).json()
        assert [i.item_id for i in stub.SimilarItems(pb.SimilarItemsRequest(item_id="i4", k=5)).items] == _ids(hs)
        hp = c.get("/v1/popular", params={"k": 2, "window": "1d"}).json()
        assert [i.item_id for i in stub.Popular(pb.PopularRequest(k=2, window="1d")).items] == _ids(hp) == ["i7", "i9"]
        for call, req, code in (
            (stub.Recommend, pb.RecommendRequest(user_id="u2", k=1000), grpc.StatusCode.INVALID_ARGUMENT),
            (stub.Recommend, pb.RecommendRequest(user_id="u2", variant="x"), grpc.StatusCode.INVALID_ARGUMENT),
            (stub.SimilarItems, pb.SimilarItemsRequest(item_id="missing"), grpc.StatusCode.NOT_FOUND),
            (stub.Popular, pb.PopularRequest(window="2y"), grpc.StatusCode.INVALID_ARGUMENT),
            (stub.Recommend, pb.RecommendRequest(user_id="u2", exclude_items=["x"] * 501),
             grpc.StatusCode.RESOURCE_EXHAUSTED),
        ):  # fmt: skip
            with pytest.raises(grpc.RpcError) as err:
                call(req)
            assert err.value.code() == code
        # k: omitted means the default on both; an explicit out-of-range k (0 included) is 422 / INVALID_ARGUMENT
        max_k = settings.scoring.max_k
        assert len(stub.Recommend(pb.RecommendRequest(user_id="u2")).items) == settings.scoring.default_k
        assert len(c.get("/v1/users/u2/recommendations").json()["items"]) == settings.scoring.default_k
        for bad in (0, -1, max_k + 1):
            for path, call, req in (
                ("/v1/users/u2/recommendations", stub.Recommend, pb.RecommendRequest(user_id="u2", k=bad)),
                ("/v1/items/i4/similar", stub.SimilarItems, pb.SimilarItemsRequest(item_id="i4", k=bad)),
                ("/v1/popular", stub.Popular, pb.PopularRequest(k=bad)),
            ):
                assert c.get(path, params={"k": bad}).status_code == 422, (path, bad)
                with pytest.raises(grpc.RpcError) as err:
                    call(req)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (call, bad)
        assert len(stub.Recommend(pb.RecommendRequest(user_id="u2", k=max_k)).items) == len(
            c.get("/v1/users/u2/recommendations", params={"k": max_k}).json()["items"]
        )
        assert c.get("/v1/items/missing/similar").status_code == 404
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        # the health status follows readiness within one background refresh (popular_refresh_s)
        deadline = time.monotonic() + 10
        while True:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="recmesh.v1.RecommendService")
            )
            if status.status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status.status == health_pb2.HealthCheckResponse.SERVING

    # impressions: every response above reached the topic (decode them)
    served = [r.json() for r in (c.get(f"/v1/users/imp{i}/recommendations", params={"k": 3}) for i in range(5))]
    cons = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id, "auto.offset.reset": "earliest"})
    cons.subscribe([topics.name(RECOMMENDATIONS_SERVED)])
    codec = AvroCodec(RecommendationServed)
    got: dict[str, RecommendationServed] = {}
    deadline = time.monotonic() + 20
    want = {b["request_id"] for b in served}
    while not want <= set(got) and time.monotonic() < deadline:
        msg = cons.poll(0.5)
        if msg is not None and not msg.error():
            ev = codec.decode(msg.value())
            got[ev.request_id] = ev
    cons.close()
    assert want <= set(got)
    ev = got[served[0]["request_id"]]
    assert ev.user_id == "imp0" and ev.tenant == tenant and ev.model_version == "v1" and ev.surface == "recommend"
    assert [i.item_id for i in ev.items] == _ids(served[0]) and ev.items[0].rank == 1


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_degraded_mode_when_redis_is_down(scoring_settings, serve, http, tmp_path):
    """Exists because Redis is a dependency of every request: when it stops, scoring must keep
    answering 200 from the model's own factors and popularity in memory, flagged degraded, and
    recover when Redis is back."""
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    try:
        _wait(lambda: _ping(port), what="redis up")
        settings = scoring_settings({"redis": {"url": f"redis://127.0.0.1:{port}/0"}}, impressions=False,
                                    consume_models=False, consume_catalog=False, redis_retry_s=0.2)  # fmt: skip
        art = make_artifact(seed=4)
        register(settings.registry.uri, "v1", art)
        srv = serve(settings)
        srv.wait_ready()
        c = http(srv.url)
        ok = c.get("/v1/users/u5/recommendations", params={"k": 5}).json()
        assert ok["degraded"] is False and len(ok["items"]) == 5
        proc.terminate()
        proc.wait(10)
        for _ in range(5):
            r = c.get("/v1/users/u5/recommendations", params={"k": 5})
            assert r.status_code == 200
            assert r.json()["degraded"] is True and _ids(r.json()) == _ids(ok)  # factors in memory
        cold = c.get("/v1/users/nobody/recommendations", params={"k": 3}).json()
        assert cold["degraded"] is True and _ids(cold) == ["i0", "i1", "i2"]  # artifact popularity
        pop = c.get("/v1/popular", params={"k": 3})
        assert pop.status_code == 200 and pop.json()["degraded"] is True
        assert c.get("/readyz").status_code == 200
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _wait(lambda: _ping(port), what="redis back")
        _wait(lambda: c.get("/v1/users/u5/recommendations").json()["degraded"] is False, what="recovery")
    finally:
        proc.terminate()
        proc.wait(10)


def _ping(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False
