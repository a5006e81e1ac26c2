"""gRPC front end: ``recmesh.v1.RecommendService`` on grpc.aio, in the uvicorn event loop.

Same engine, validation and errors as HTTP: :func:`grpc_errors` is the one place that turns a
:class:`RecmeshError` into its gRPC status (``exc.grpc_status``). The standard health service
(``grpc.health.v1.Health``, NOT_SERVING until the engine is ready) and server reflection are
registered next to it. API keys come in the ``x-api-key`` metadata, the tenant in the request
or the ``x-tenant`` metadata.

``k`` is an ``optional`` field: unset means the server default (like an omitted HTTP ``k``), a set
value goes through the same :func:`check_k` as HTTP, so 0, negatives and values above ``max_k``
are INVALID_ARGUMENT exactly where HTTP answers 422.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from recmesh.core.errors import RecmeshError
from recmesh.core.web import ApiKeyAuth
from recmesh.scoring.engine import Engine, parse_recommend
from recmesh.scoring.proto import recommend_pb2 as pb
from recmesh.scoring.proto import recommend_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RecommendService"].full_name
R = TypeVar("R")


def grpc_errors(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Translate RecmeshError → its status code (the gRPC twin of the HTTP exception handler)."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await fn(self, request, context)
        except RecmeshError as exc:
            await context.abort(grpc.StatusCode[exc.grpc_status], exc.message)
            raise  # unreachable: abort raises

    return wrapper


def _k(request: Any) -> int | None:
    """The request's k when the client set it (0 included), None when it did not (proto3 presence)."""
    return int(request.k) if request.HasField("k") else None


def to_proto(body: dict[str, Any]) -> pb.RecommendResponse:
    return pb.RecommendResponse(
        request_id=body["request_id"],
        model_version=body.get("model_version") or "",
        model_name=body.get("model_name") or "",
        variant=body.get("variant") or "",
        degraded=bool(body.get("degraded")),
        user_id=body.get("user_id") or "",
        items=[
            pb.RecommendedItem(
                item_id=i["item_id"], score=float(i["score"]), rank=i["rank"], source=i["source"], reason=i["reason"]
            )
            for i in body["items"]
        ],
    )


class RecommendServicer(pb_grpc.RecommendServiceServicer):
    def __init__(self, engine: Engine, auth: ApiKeyAuth, default_tenant: str) -> None:
        self.engine = engine
        self.auth = auth
        self.default_tenant = default_tenant

    def _tenant(self, requested: str, context: grpc.aio.ServicerContext) -> str:
        md = {k: v for k, v in (context.invocation_metadata() or ())}
        tenant = requested or md.get("x-tenant") or self.default_tenant
        return self.auth.check(md.get("x-api-key"), str(tenant))

    @grpc_errors
    async def Recommend(self, request: pb.RecommendRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        tenant = self._tenant(request.tenant, context)
        req = parse_recommend(
            self.engine.s,
            request.user_id,
            k=_k(request),
            exclude_seen=request.exclude_seen if request.HasField("exclude_seen") else None,
            category=request.category or None,
            variant=request.variant or None,
            context=dict(request.context),
            include_items=list(request.include_items),
            exclude_items=list(request.exclude_items),
            boost_items=dict(request.boost_items),
            boost_categories=dict(request.boost_categories),
        )
        return to_proto(await self.engine.recommend(req, tenant))

    @grpc_errors
    async def SimilarItems(self, request: pb.SimilarItemsRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        tenant = self._tenant(request.tenant, context)
        body = await self.engine.similar(request.item_id, _k(request), tenant, request.user_id or None)
        return to_proto(body)

    @grpc_errors
    async def Popular(self, request: pb.PopularRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        tenant = self._tenant(request.tenant, context)
        body = await self.engine.popular(_k(request), request.window or None, request.category or None, tenant)
        return to_proto(body)


class GrpcServer:
    """The grpc.aio server with the recommend, health and reflection services."""

    def __init__(self, engine: Engine, auth: ApiKeyAuth, default_tenant: str, host: str, port: int) -> None:
        self.server = grpc.aio.server()
        pb_grpc.add_RecommendServiceServicer_to_server(RecommendServicer(engine, auth, default_tenant), self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        self._serving: bool | None = None

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()
        log.info("grpc serving", extra={"port": self.port})

    async def set_serving(self, ok: bool) -> None:
        if ok == self._serving:
            return
        self._serving = ok
        status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(SERVICE_NAME, status)
        await self.health.set("", status)

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
