"""gRPC means what HTTP means: k (optional in the proto) and its errors, without a server."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from recmesh.core.errors import ValidationError
from recmesh.scoring.engine import check_k
from recmesh.scoring.grpc_service import RecommendServicer
from recmesh.scoring.proto import recommend_pb2 as pb
from tests.unit.scoring.test_engine import _engine


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    def invocation_metadata(self):
        return ()

    async def abort(self, code, message):
        self.code = code
        raise _Aborted(message)


class _OpenAuth:
    def check(self, key, tenant):
        return tenant


def _call(method: str, request):
    engine = _engine()
    servicer = RecommendServicer(engine, _OpenAuth(), "default")  # type: ignore[arg-type]
    ctx = _Context()
    try:
        return asyncio.run(getattr(servicer, method)(request, ctx)), None
    except _Aborted:
        return None, ctx.code


@pytest.mark.parametrize("k", [0, -1, 101, 1, 100])
def test_explicit_k_is_checked_like_http(k):
    """HTTP's ``?k=`` goes through check_k (422 on ValidationError); gRPC must agree for every k."""
    try:
        check_k(k, _engine().s)
        http_ok = True
    except ValidationError as exc:
        assert exc.http_status == 422
        http_ok = False
    for method, req in (
        ("Recommend", pb.RecommendRequest(user_id="u1", k=k)),
        ("SimilarItems", pb.SimilarItemsRequest(item_id="i3", k=k)),
        ("Popular", pb.PopularRequest(k=k)),
    ):
        resp, code = _call(method, req)
        if http_ok:
            assert code is None and 0 < len(resp.items) <= k, method
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT, method


def test_unset_k_is_the_default_like_an_omitted_query_parameter():
    for method, req in (
        ("Recommend", pb.RecommendRequest(user_id="u1")),
        ("SimilarItems", pb.SimilarItemsRequest(item_id="i3")),
        ("Popular", pb.PopularRequest()),
    ):
        resp, code = _call(method, req)
        assert code is None and len(resp.items) == 10, method
    assert not pb.RecommendRequest(user_id="u1").HasField("k")
    assert pb.RecommendRequest(user_id="u1", k=0).HasField("k")  # an explicit 0 is on the wire
