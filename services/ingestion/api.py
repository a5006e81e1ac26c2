"""HTTP routes of the front door: ``/v1/events`` and the catalog (``/v1/items``, ``/v1/users``).

Bodies are read raw (bounded: 413 past ``max_body_bytes``), parsed with orjson and
validated in plain Python by :mod:`recmesh.ingestion.handlers`. The pydantic models below
exist only to document the contract in OpenAPI (``/docs``).

Order of work for ``POST /v1/events``: API key → body → validation (per-entry rejects) →
tenant authorisation (403 for another tenant's key) → idempotency claim of client event
ids (Redis SET NX, *pending* with a short TTL) → backpressure check (queue depth + batch
against the bound, 503 + Retry-After *before* anything is enqueued) → produce and await the
broker's acks → mark the acknowledged ids *done* (full TTL; failed ones are released) → 202.
An event is reported accepted only once Kafka acknowledged it, and a duplicate only once an
earlier copy was acknowledged: an id whose claim is still pending (another request in flight,
or a process that died before the ack) is rejected with "in flight; retry" (503 + Retry-After
for a single event), so a crash never turns the client's retry into a lost event.

Catalog records are keyed by :func:`recmesh.core.topics.catalog_key` (tenant-qualified outside
the default tenant): compaction and ``DELETE`` (a tombstone, in the caller's tenant) never
reach another tenant's entity with the same id.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter as Tally
from typing import Any

import orjson
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from recmesh.core.errors import Backpressure, PayloadTooLarge, Unavailable, ValidationError
from recmesh.core.events import EVENT_TYPES, now_ms
from recmesh.core.metrics import Counter, Histogram
from recmesh.core.topics import CATALOG_ITEMS, CATALOG_USERS, INTERACTIONS, TopicSpec, catalog_key
from recmesh.ingestion.app import DUPLICATE, IN_FLIGHT, NEW, Ingestion
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
* A repeated `event_id` is accepted once (idempotency key, remembered for `dedupe_ttl_s`). While
  another request with the same id waits for Kafka, the id is rejected as *in flight* (retry it;
  a single event gets `503` with `Retry-After`).
* `DELETE /v1/items/{id}` and `/v1/users/{id}` delete in the caller's tenant only.
* `202` is sent only after Kafka acknowledged the events. Under backpressure the answer is
  `503` with `Retry-After` and nothing of the request was enqueued.
* Auth: `X-API-Key`; a key is valid for one tenant (or `*`). The tenant is the event's
  `tenant` field, else the `X-Tenant` header, else the key's tenant, else the default.
"""

JSON = "application/json"
_IN_FLIGHT_MSG = "event_id {!r} is in flight (claimed by a request the broker has not acknowledged yet); retry"


class EventInFlight(Unavailable):
    """The single event's id is claimed by a request still waiting for the broker: retry later."""

    code = "in_flight"

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
    503: {
        "model": ErrorBody,
        "description": "Backpressure, broker unavailable, or (single event) its event_id in flight; "
        "retry after Retry-After.",
    },
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
        rejected = v.rejected
        duplicates = 0
        claimed: list[Any] = []
        if state.dedupe is not None and any(v.client_ids):
            to_claim = [ev for ev, cid in zip(events, v.client_ids, strict=True) if cid]
            try:
                answers = await state.dedupe.claim(to_claim)
            except Exception as exc:
                REQUESTS_REFUSED.labels("redis").inc()
                raise Unavailable(f"idempotency store unavailable: {type(exc).__name__}") from None
            claimed = [ev for ev, a in zip(to_claim, answers, strict=True) if a == NEW]
            if len(claimed) < len(to_claim):
                skip = {id(ev): a for ev, a in zip(to_claim, answers, strict=True) if a != NEW}
                duplicates = sum(a == DUPLICATE for a in skip.values())
                in_flight = len(skip) - duplicates
                if duplicates:
                    EVENTS_DUPLICATE.inc(duplicates)
                if in_flight:
                    EVENTS_REJECTED.labels("in_flight").inc(in_flight)
                    if single:
                        raise EventInFlight(
                            _IN_FLIGHT_MSG.format(events[0].event_id),
                            retry_after_s=state.settings.ingestion.retry_after_s,
                        )
                keep = []
                for j, ev in enumerate(events):
                    a = skip.get(id(ev))
                    if a is None:
                        keep.append(j)
                    elif a == IN_FLIGHT:
                        rejected.append({"index": v.indices[j], "error": _IN_FLIGHT_MSG.format(ev.event_id)})
                events = [events[j] for j in keep]
                v.indices = [v.indices[j] for j in keep]
                rejected.sort(key=lambda r: r["index"])
        accepted = 0
        if events:
            try:
                results = await _produce(state, INTERACTIONS, events)
            except BaseException:
                if claimed and state.dedupe is not None:
                    await _release(state, claimed)
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
                rejected.sort(key=lambda r: r["index"])
            if claimed and state.dedupe is not None:
                failed_ids = {id(ev) for ev in failed}
                if failed_ids:
                    await _release(state, [ev for ev in claimed if id(ev) in failed_ids])
                    claimed = [ev for ev in claimed if id(ev) not in failed_ids]
                await _confirm(state, claimed)
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
            results = await _produce_catalog(state, spec, [ev])
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
                results = await _produce_catalog(state, spec, v.events)
                for idx, err in zip(v.indices, results, strict=True):
                    if err is None:
                        accepted += 1
                    else:
                        rejected.append({"index": idx, "error": f"not accepted by the broker: {err}; retry"})
                rejected.sort(key=lambda r: r["index"])
                CATALOG_ACCEPTED.labels(kind, "upsert").inc(accepted)
            return _json({"accepted": accepted, "rejected": rejected})

        async def delete_one(entity_id: str, request: Request) -> Response:
            ctx = _Request(state, request)  # authenticates, and authorises the caller's tenant
            # A tombstone deletes by key: the key names the caller's tenant, so no other tenant's
            # entity with the same id is touched.
            key = _catalog_key(state, ctx.default_tenant, entity_id)
            err = (await _produce_catalog(state, spec, [None], keys=[key]))[0]
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
            summary=f"Delete one {kind} of the caller's tenant (a tombstone on the compacted topic)",
            status_code=202,
            response_model=EventsAccepted,
            responses={k: v for k, v in _ERRORS.items() if k in (401, 403, 503)},
        )(delete_one)

    catalog_routes("item", CATALOG_ITEMS, ItemIn)
    catalog_routes("user", CATALOG_USERS, UserIn)


def _catalog_key(state: Ingestion, tenant: str, entity_id: str) -> str:
    try:
        return catalog_key(tenant, entity_id, state.settings.tenant)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


async def _produce_catalog(
    state: Ingestion, spec: TopicSpec, events: list[Any], keys: list[str] | None = None
) -> list[str | None]:
    """Produce catalog records keyed by tenant-qualified keys and await their acknowledgements.

    ``events`` holds ItemUpdate/UserUpdate values, or None for a tombstone (then ``keys`` names
    what to delete). Returns, per record, None when acknowledged, else the error text.
    """
    producer = _producer(state)
    if keys is None:
        keys = [_catalog_key(state, ev.tenant, getattr(ev, spec.key)) for ev in events]
    _check_capacity(state, len(events))
    loop = asyncio.get_running_loop()
    topic = state.topics.name(spec)
    results: list[str | None] = [None] * len(events)
    waits: list[tuple[int, asyncio.Future[str | None]]] = []

    def settle(fut: asyncio.Future[str | None], res: str | None) -> None:
        if not fut.done():
            fut.set_result(res)

    for i, (ev, key) in enumerate(zip(events, keys, strict=True)):
        try:
            value = None if ev is None else producer.encode(spec, ev)
        except Exception as exc:  # fastavro raises ValueError/TypeError/... on invalid fields
            results[i] = f"invalid {spec.key.removesuffix('_id')}: {type(exc).__name__}: {exc}"
            continue
        fut: asyncio.Future[str | None] = loop.create_future()

        def cb(err: Any, msg: Any, fut: asyncio.Future[str | None] = fut) -> None:
            loop.call_soon_threadsafe(settle, fut, None if err is None else str(err))

        try:
            producer.produce_raw(topic, value, key.encode(), None, cb)
        except Backpressure as exc:
            if not waits:
                REQUESTS_REFUSED.labels("backpressure").inc()
                raise Backpressure(exc.message, retry_after_s=state.settings.ingestion.retry_after_s) from None
            for j in range(i, len(events)):  # the enqueued prefix is still delivered and reported
                results[j] = "backpressure"
            break
        except KafkaException as exc:  # e.g. a message larger than message.max.bytes
            results[i] = str(exc)
            continue
        waits.append((i, fut))
    if waits:
        try:
            timeout = state.settings.ingestion.ack_timeout_s
            acks = await asyncio.wait_for(asyncio.gather(*(f for _, f in waits)), timeout)
        except TimeoutError:
            REQUESTS_REFUSED.labels("ack_timeout").inc()
            raise Unavailable("the broker did not acknowledge the catalog records in time; retry") from None
        for (i, _), err in zip(waits, acks, strict=True):
            results[i] = err
    return results


async def _confirm(state: Ingestion, events: list[Any]) -> None:
    """Mark acknowledged ids done. A failure is logged, not raised: the events are in Kafka, and
    the pending claim then expires (a retry after that is produced again and deduplicated by
    the consumers, which is at-least-once, never a loss)."""
    assert state.dedupe is not None
    try:
        await state.dedupe.confirm(events)
    except Exception as exc:
        log.warning("could not confirm idempotency claims", extra={"events": len(events), "error": repr(exc)})


async def _release(state: Ingestion, events: list[Any]) -> None:
    """Forget pending claims of events not accepted. On failure they expire by themselves
    (until then a retry is answered "in flight", never "duplicate")."""
    assert state.dedupe is not None
    try:
        await state.dedupe.release(events)
    except Exception as exc:
        log.warning("could not release idempotency claims", extra={"events": len(events), "error": repr(exc)})


__all__ = ["DESCRIPTION", "NDJSON_TYPES", "register"]
