"""HTTP routes of the front door: ``/v1/events`` and the catalog (``/v1/items``, ``/v1/users``).

Bodies are read raw (bounded: 413 past ``max_body_bytes``), parsed with orjson and
validated in plain Python by :mod:`recmesh.ingestion.handlers`. The pydantic models below
exist only to document the contract in OpenAPI (``/docs``).

Order of work for ``POST /v1/events``: API key → body → validation (per-entry rejects) →
tenant authorisation (403 for another tenant's key) → idempotency claim of client event
ids (Redis SET NX) → backpressure check (queue depth + batch against the bound, 503 +
Retry-After *before* anything is enqueued) → produce and await the broker's acks → 202.
An event is reported accepted only once Kafka acknowledged it.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from recmesh.core.errors import Backpressure, PayloadTooLarge, Unavailable, ValidationError
from recmesh.core.events import EVENT_TYPES, now_ms
from recmesh.core.metrics import Counter, Histogram
from recmesh.core.topics import CATALOG_ITEMS, CATALOG_USERS, INTERACTIONS, TopicSpec
from recmesh.ingestion.app import Ingestion
from recmesh.ingestion.handlers import (
    NDJSON_TYPES,
    Reject,
    Validated,
    parse_body,
    validate_catalog_batch,
    validate_item,
    validate_user,
)

log = logging.getLogger(__name__)

EVENTS_ACCEPTED = Counter(
    "recmesh_ingestion_events_accepted_total", "Interaction events acknowledged by Kafka.", ["event_type"]
)
EVENTS_REJECTED = Counter(
    "recmesh_ingestion_events_rejected_total", "Interaction events rejected, by reason.", ["reason"]
)
EVENTS_DUPLICATE = Counter(
    "recmesh_ingestion_events_duplicate_total", "Events whose client event_id was already accepted."
)
CATALOG_ACCEPTED = Counter(
    "recmesh_ingestion_catalog_accepted_total", "Catalog updates acknowledged by Kafka.", ["kind", "op"]
)
CATALOG_REJECTED = Counter(
    "recmesh_ingestion_catalog_rejected_total", "Catalog entries rejected, by reason.", ["kind", "reason"]
)
REQUESTS_REFUSED = Counter(
    "recmesh_ingestion_requests_refused_total",
    "Whole requests refused (malformed, too large, auth, backpressure).",
    ["reason"],
)
BATCH_SIZE = Histogram(
    "recmesh_ingestion_batch_events",
    "Entries per ingestion request.",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
)

DESCRIPTION = """
The front door of Recmesh: client apps send interaction events and catalog metadata here.

* `POST /v1/events` accepts one event (JSON object), a JSON array of up to `max_batch` events,
  or `application/x-ndjson` (one event per line). Valid events are accepted even when
  others in the batch are rejected; the 202 lists rejected entries by index.
* A repeated `event_id` is accepted once (idempotency key, remembered for `dedupe_ttl_s`).
* `202` is sent only after Kafka acknowledged the events. Under backpressure the answer is
  `503` with `Retry-After` and nothing of the request was enqueued.
* Auth: `X-API-Key`; a key is valid for one tenant (or `*`). The tenant is the event's
  `tenant` field, else the `X-Tenant` header, else the key's tenant, else the default.
"""

JSON = "application/json"


# -- OpenAPI documentation models (not used for validation) -----------------------------------------
class EventIn(BaseModel):
    """One interaction event, as a client sends it."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "u42", "item_id": "sku-1", "event_type": "click"}]},
    )
    event_id: str | None = Field(None, description="Idempotency key; generated when absent.")
    user_id: str = Field(..., description="User id (integers are accepted and turned into text).")
    item_id: str = Field(..., description="Item id.")
    event_type: str = Field(..., description=f"One of {', '.join(EVENT_TYPES)} (or a configured alias).")
    value: float | None = Field(None, description="Rating, dwell seconds or price.")
    timestamp: int | str | None = Field(
        None, description="Epoch milliseconds or ISO 8601; server time when absent; far future rejected."
    )
    session_id: str | None = Field(None, description="Client session id.")
    request_id: str | None = Field(None, description="Id of the served recommendation this follows.")
    context: dict[str, str] = Field(default_factory=dict, description="Free-form string context.")
    tenant: str | None = Field(None, description="Tenant (else X-Tenant, else the API key's tenant).")
    source: str | None = Field(None, description="Where the event comes from (default 'api').")


class RejectedEntry(BaseModel):
    index: int = Field(..., description="Position of the entry in the request (0-based; NDJSON line order).")
    error: str = Field(..., description="Why it was rejected (names the offending field).")


class EventsAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"accepted": 2, "duplicates": 1, "rejected": [{"index": 3, "error": "unknown field 'colour'"}]}
            ]
        }
    )
    accepted: int = Field(..., description="Events acknowledged by Kafka.")
    duplicates: int = Field(0, description="Events whose event_id was already accepted (not produced again).")
    rejected: list[RejectedEntry] = Field(default_factory=list)


class ItemIn(BaseModel):
    """Catalog metadata of one item."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"item_id": "sku-1", "title": "Red shoe", "categories": ["shoes"], "available": True}]
        },
    )
    item_id: str | None = Field(None, description="Required in batches; the path's id for PUT.")
    title: str | None = None
    categories: list[str] = Field(default_factory=list)
    attributes: dict[str, str] = Field(default_factory=dict)
    available: bool = True
    created_at: int | str | None = Field(None, description="Epoch ms or ISO 8601.")
    tenant: str | None = None


class UserIn(BaseModel):
    """Profile metadata of one user."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "u42", "segments": ["new"], "attributes": {"country": "FR"}}]},
    )
    user_id: str | None = Field(None, description="Required in batches; the path's id for PUT.")
    attributes: dict[str, str] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list)
    created_at: int | str | None = Field(None, description="Epoch ms or ISO 8601.")
    tenant: str | None = None


class ErrorBody(BaseModel):
    error: str
    detail: str
    details: Any | None = None


def _body_doc(model: type[BaseModel], batch: bool, single: bool = True) -> dict[str, Any]:
    one = model.model_json_schema()
    schemas: list[dict[str, Any]] = []
    if single:
        schemas.append(one)
    if batch:
        schemas.append({"type": "array", "items": one})
    content: dict[str, Any] = {
        JSON: {"schema": schemas[0] if len(schemas) == 1 else {"oneOf": schemas}},
    }
    if batch:
        content["application/x-ndjson"] = {
            "schema": {"type": "string", "description": "One JSON object per line."},
            "example": '{"user_id":"u1","item_id":"i1","event_type":"view"}\n'
            '{"user_id":"u1","item_id":"i2","event_type":"click"}\n',
        }
    return {"requestBody": {"required": True, "content": content}}


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Malformed JSON (details: line, column, position)."},
    401: {"model": ErrorBody, "description": "Missing or invalid X-API-Key."},
    403: {"model": ErrorBody, "description": "The key is not valid for the event's tenant."},
    413: {"model": ErrorBody, "description": "Body larger than max_body_bytes or more than max_batch entries."},
    422: {"model": ErrorBody, "description": "A single (non-batch) entry is invalid."},
    503: {"model": ErrorBody, "description": "Backpressure or broker unavailable; retry after Retry-After."},
}


# -- helpers ----------------------------------------------------------------------------------------
def _json(body: dict[str, Any], status: int = 202) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


async def _read_body(request: Request, limit: int) -> bytes:
    cl = request.headers.get("content-length")
    if cl is not None and cl.isdigit() and int(cl) > limit:
        REQUESTS_REFUSED.labels("too_large").inc()
        raise PayloadTooLarge(f"body of {cl} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            REQUESTS_REFUSED.labels("too_large").inc()
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _producer(state: Ingestion) -> Any:
    if state.producer is None:
        raise Unavailable("the producer is not started")
    return state.producer


def _check_capacity(state: Ingestion, n: int) -> None:
    """503 before enqueueing anything when the batch would not fit in the producer queue."""
    depth = _producer(state).queue_depth()
    if depth + n > state.queue_bound:
        REQUESTS_REFUSED.labels("backpressure").inc()
        raise Backpressure(
            f"producer queue has {depth} messages; {n} more would exceed {state.queue_bound}",
            retry_after_s=state.settings.ingestion.retry_after_s,
        )


class _Request:
    """Per-request auth context: the key, the tenant it may act for, and the default tenant."""

    __slots__ = ("key", "default_tenant", "allowed")

    def __init__(self, state: Ingestion, request: Request) -> None:
        auth = state.auth
        self.key = request.headers.get("x-api-key")
        header_tenant = request.headers.get("x-tenant")
        if auth.open:
            self.allowed: set[str] = set()
            self.default_tenant = header_tenant or state.settings.tenant
            return
        key_tenant = auth.keys.get(self.key) if self.key else None
        # 401 before the body is even read: unauthenticated clients cost nothing.
        default = header_tenant or (key_tenant if key_tenant not in (None, "*") else state.settings.tenant)
        self.default_tenant = default
        auth.check(self.key, default)
        self.allowed = {default}

    def authorise(self, state: Ingestion, tenants: set[str]) -> None:
        if state.auth.open:
            return
        for t in tenants - self.allowed:
            state.auth.check(self.key, t)
            self.allowed.add(t)


async def _parse(state: Ingestion, request: Request, what: str) -> tuple[list[Any], bool]:
    s = state.settings.ingestion
    body = await _read_body(request, s.max_body_bytes)
    try:
        entries, single = parse_body(body, request.headers.get("content-type"))
    except Exception:
        REQUESTS_REFUSED.labels("malformed").inc()
        raise
    if len(entries) > s.max_batch:
        REQUESTS_REFUSED.labels("too_many").inc()
        raise PayloadTooLarge(f"{len(entries)} {what} in one request; at most {s.max_batch} allowed")
    BATCH_SIZE.observe(len(entries))
    return entries, single


async def _produce(state: Ingestion, spec: TopicSpec, events: list[Any]) -> list[str | None]:
    """Enqueue after the capacity check (no await in between) and wait for the broker's acks."""
    producer = _producer(state)
    _check_capacity(state, len(events))
    try:
        return await producer.send_batch_async(spec, events, timeout=state.settings.ingestion.ack_timeout_s)
    except Backpressure as exc:
        REQUESTS_REFUSED.labels("backpressure").inc()
        raise Backpressure(exc.message, retry_after_s=state.settings.ingestion.retry_after_s) from None
    except TimeoutError:
        REQUESTS_REFUSED.labels("ack_timeout").inc()
        raise Unavailable("the broker did not acknowledge the batch in time; retry (ids are idempotent)") from None


# -- routes -----------------------------------------------------------------------------------------
def register(app: FastAPI, state: Ingestion) -> None:
    """Add the /v1 routes to ``app`` (bound to ``state``)."""
    max_id = state.settings.ingestion.max_id_length

    @app.post(
        "/v1/events",
        tags=["events"],
        summary="Send interaction events (object, array or NDJSON)",
        status_code=202,
        response_model=EventsAccepted,
        responses=_ERRORS,
        openapi_extra=_body_doc(EventIn, batch=True),
    )
    async def post_events(request: Request) -> Response:
        ctx = _Request(state, request)
        entries, single = await _parse(state, request, "events")
        v = state.validator.batch(entries, ctx.default_tenant)
        for reason, n in v.reasons.items():
            EVENTS_REJECTED.labels(reason).inc(n)
        if single and v.rejected:
            raise ValidationError(v.rejected[0]["error"], details={"rejected": v.rejected})
        ctx.authorise(state, {ev.tenant for ev in v.events})
        events = v.events
        duplicates = 0
        claimed: list[Any] = []
        if state.dedupe is not None and any(v.client_ids):
            to_claim = [ev for ev, cid in zip(events, v.client_ids, strict=True) if cid]
            try:
                fresh = await state.dedupe.claim(to_claim)
            except Exception as exc:
                REQUESTS_REFUSED.labels("redis").inc()
                raise Unavailable(f"idempotency store unavailable: {type(exc).__name__}") from None
            dup_ids = {id(ev) for ev, new in zip(to_claim, fresh, strict=True) if not new}
            claimed = [ev for ev, new in zip(to_claim, fresh, strict=True) if new]
            if dup_ids:
                duplicates = len(dup_ids)
                EVENTS_DUPLICATE.inc(duplicates)
                keep = [j for j, ev in enumerate(events) if id(ev) not in dup_ids]
                events = [events[j] for j in keep]
                v.indices = [v.indices[j] for j in keep]
        rejected = v.rejected
        accepted = 0
        if events:
            try:
                results = await _produce(state, INTERACTIONS, events)
            except BaseException:
                if claimed and state.dedupe is not None:
                    await state.dedupe.release(claimed)
                raise
            by_type: Tally[str] = Tally()
            failed = []
            for ev, idx, err in zip(events, v.indices, results, strict=True):
                if err is None:
                    by_type[ev.event_type] += 1
                else:
                    failed.append(ev)
                    rejected.append({"index": idx, "error": f"not accepted by the broker: {err}; retry"})
            accepted = len(events) - len(failed)
            for et, n in by_type.items():
                EVENTS_ACCEPTED.labels(et).inc(n)
            if failed:
                EVENTS_REJECTED.labels("produce_failed").inc(len(failed))
                if state.dedupe is not None:
                    claimed_ids = {id(ev) for ev in claimed}
                    await state.dedupe.release([ev for ev in failed if id(ev) in claimed_ids])
                rejected.sort(key=lambda r: r["index"])
        out: dict[str, Any] = {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}
        if single and events:
            out["event_id"] = events[0].event_id
        return _json(out)

    # -- catalog ------------------------------------------------------------------------------------
    def catalog_routes(kind: str, spec: TopicSpec, model: type[BaseModel]) -> None:
        plural = f"{kind}s"
        one = validate_item if kind == "item" else validate_user

        async def put_one(entity_id: str, request: Request) -> Response:
            ctx = _Request(state, request)
            entries, single = await _parse(state, request, plural)
            if not single:
                raise ValidationError(f"PUT /v1/{plural}/{{id}} takes one JSON object")
            try:
                ev = one(entries[0], ctx.default_tenant, now_ms(), max_id, entity_id)
            except Reject as exc:
                CATALOG_REJECTED.labels(kind, exc.reason).inc()
                raise ValidationError(exc.message) from None
            ctx.authorise(state, {ev.tenant})
            results = await _produce(state, spec, [ev])
            if results[0] is not None:
                raise Unavailable(f"not accepted by the broker: {results[0]}; retry")
            CATALOG_ACCEPTED.labels(kind, "upsert").inc()
            return _json({"accepted": 1, "rejected": []})

        async def post_batch(request: Request) -> Response:
            ctx = _Request(state, request)
            entries, single = await _parse(state, request, plural)
            v: Validated = validate_catalog_batch(entries, kind, ctx.default_tenant, max_id=max_id)
            for reason, n in v.reasons.items():
                CATALOG_REJECTED.labels(kind, reason).inc(n)
            ctx.authorise(state, {ev.tenant for ev in v.events})
            rejected = v.rejected
            accepted = 0
            if v.events:
                results = await _produce(state, spec, v.events)
                for idx, err in zip(v.indices, results, strict=True):
                    if err is None:
                        accepted += 1
                    else:
                        rejected.append({"index": idx, "error": f"not accepted by the broker: {err}; retry"})
                rejected.sort(key=lambda r: r["index"])
                CATALOG_ACCEPTED.labels(kind, "upsert").inc(accepted)
            return _json({"accepted": accepted, "rejected": rejected})

        async def delete_one(entity_id: str, request: Request) -> Response:
            _Request(state, request)  # authentication and tenant authorisation only
            err = await _tombstone(state, spec, entity_id)
            if err is not None:
                raise Unavailable(f"tombstone not accepted by the broker: {err}; retry")
            CATALOG_ACCEPTED.labels(kind, "delete").inc()
            return _json({"accepted": 1, "rejected": []})

        app.put(
            f"/v1/{plural}/{{entity_id}}",
            tags=["catalog"],
            summary=f"Create or replace one {kind}",
            status_code=202,
            response_model=EventsAccepted,
            responses=_ERRORS,
            openapi_extra=_body_doc(model, batch=False),
        )(put_one)
        app.post(
            f"/v1/{plural}",
            tags=["catalog"],
            summary=f"Create or replace {plural} in a batch (array or NDJSON)",
            status_code=202,
            response_model=EventsAccepted,
            responses=_ERRORS,
            openapi_extra=_body_doc(model, batch=True, single=False),
        )(post_batch)
        app.delete(
            f"/v1/{plural}/{{entity_id}}",
            tags=["catalog"],
            summary=f"Delete one {kind} (a tombstone on the compacted topic)",
            status_code=202,
            response_model=EventsAccepted,
            responses={k: v for k, v in _ERRORS.items() if k in (401, 403, 503)},
        )(delete_one)

    catalog_routes("item", CATALOG_ITEMS, ItemIn)
    catalog_routes("user", CATALOG_USERS, UserIn)


async def _tombstone(state: Ingestion, spec: TopicSpec, key: str) -> str | None:
    """Produce a null value for ``key`` and await its acknowledgement (None when acknowledged)."""
    import asyncio

    producer = _producer(state)
    _check_capacity(state, 1)
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str | None] = loop.create_future()

    def cb(err: Any, msg: Any) -> None:
        res = None if err is None else str(err)
        loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(res))

    producer.produce_raw(state.topics.name(spec), None, key.encode(), None, cb)
    try:
        return await asyncio.wait_for(fut, state.settings.ingestion.ack_timeout_s)
    except TimeoutError:
        raise Unavailable("the broker did not acknowledge the tombstone in time; retry") from None


__all__ = ["DESCRIPTION", "NDJSON_TYPES", "register"]
