"""HTTP plumbing shared by every service: app factory, health/readiness/metrics, errors, auth.

``create_app`` (feast ``get_app`` style) returns a FastAPI app with ``/healthz`` (process
alive), ``/readyz`` (503 until the service's readiness check passes), ``/metrics``
(Prometheus), one exception handler translating :class:`RecmeshError` to its HTTP status,
and a latency histogram per route template. Consumer-only services serve just these.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, Self

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from recmesh.core import metrics as m
from recmesh.core.errors import Backpressure, Forbidden, RecmeshError, Unauthenticated
from recmesh.core.settings import AuthSettings, HttpSettings

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, dict[str, Any]]]


class LatencyMiddleware:
    """Pure ASGI middleware: observes request seconds per method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            m.HTTP_LATENCY.labels(scope["method"], path, str(status[0])).observe(time.perf_counter() - t0)


def error_response(exc: RecmeshError) -> JSONResponse:
    headers = {}
    # Backpressure, and any other error that knows when a retry makes sense (e.g. an event id in flight).
    retry_after = exc.retry_after_s if isinstance(exc, Backpressure) else getattr(exc, "retry_after_s", None)
    if isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, round(retry_after)))
    body: dict[str, Any] = {"error": exc.code, "detail": exc.message}
    if exc.details is not None:
        body["details"] = exc.details
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


def create_app(
    title: str,
    ready_check: ReadyCheck,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    version: str = "0.1.0",
    description: str = "",
) -> FastAPI:
    """A FastAPI app with health, readiness, metrics and error translation wired in."""
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan)
    app.add_middleware(LatencyMiddleware)

    @app.exception_handler(RecmeshError)
    async def _recmesh_error(request: Request, exc: RecmeshError) -> JSONResponse:
        return error_response(exc)

    @app.get("/healthz", tags=["ops"], summary="Process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], summary="Dependencies and model ready (503 until then)")
    async def readyz() -> JSONResponse:
        try:
            ok, details = ready_check()
        except Exception as exc:  # a failing check means not ready, never a 500
            ok, details = False, {"error": repr(exc)}
        return JSONResponse({"ready": ok, **details}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, ctype = m.render()
        return Response(body, media_type=ctype)

    return app


class BackgroundService(Protocol):
    """A consumer-only service: threads started by ``start`` and stopped by ``stop``."""

    def start(self) -> Self: ...

    def stop(self) -> None: ...

    def ready_check(self) -> tuple[bool, dict[str, Any]]: ...


def create_service_app(title: str, factory: Callable[[], BackgroundService], description: str = "") -> FastAPI:
    """Ops-only app (health, readiness, metrics) whose lifespan starts and stops ``factory()``.

    The service is built inside the lifespan (not at import), exposed as ``app.state.service``,
    and stopped off the event loop on shutdown (SIGTERM: finish the batch, commit, flush).
    """
    holder: dict[str, BackgroundService] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = holder["svc"] = factory().start()
        app.state.service = svc
        # Long-lived start-up objects (clients, caches, models) leave the collector's reach, so
        # full collections stay short instead of stalling the consumer threads.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await asyncio.to_thread(svc.stop)

    def ready() -> tuple[bool, dict[str, Any]]:
        svc = holder.get("svc")
        return (False, {"consumers": "not started"}) if svc is None else svc.ready_check()

    return create_app(title, ready, lifespan=lifespan, description=description)


class ApiKeyAuth:
    """API keys from settings: ``{key: tenant}``; ``'*'`` grants every tenant. None = open."""

    def __init__(self, auth: AuthSettings) -> None:
        self.keys = auth.tenants_by_key()
        if not self.keys:
            log.warning("no API keys configured: the API is open (set RECMESH_AUTH__API_KEYS)")

    @property
    def open(self) -> bool:
        return not self.keys

    def check(self, key: str | None, tenant: str) -> str:
        """Return the tenant the caller may act for, or raise 401/403."""
        if self.open:
            return tenant
        if not key:
            raise Unauthenticated("missing X-API-Key header")
        allowed = self.keys.get(key)
        if allowed is None:
            raise Unauthenticated("invalid API key")
        if allowed not in ("*", tenant):
            raise Forbidden(f"API key is not valid for tenant {tenant!r}")
        return tenant


def serve(app: Any, http: HttpSettings, **kwargs: Any) -> None:
    """Run uvicorn in this process (blocking) with the service's JSON logging left alone."""
    import uvicorn

    uvicorn.run(app, host=http.host, port=http.port, log_config=None, access_log=False, **kwargs)


async def noop_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
