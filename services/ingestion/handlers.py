"""Pure request logic of the front door: body parsing, validation and normalisation.

No I/O here: the API layer reads the body, calls these functions, then deduplicates,
authorises and produces. Validation is plain Python over ``orjson`` output (a pydantic
model per event would cost more than everything else on the hot path); the pydantic
models in ``api.py`` only document the same contract in OpenAPI.

Rejections carry the index of the entry in the request and a reason label (for metrics)
next to the human message, e.g. ``(3, "unknown_field", "unknown field 'colour'")``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

import orjson

from recmesh.core.errors import RecmeshError
from recmesh.core.events import EVENT_TYPES, Interaction, ItemUpdate, UserUpdate, new_id, now_ms
from recmesh.ingestion.settings import EventTypeRule, IngestionSection

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonlines", "application/jsonl")
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
_MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class MalformedBody(RecmeshError):
    """The body is not valid JSON (or NDJSON); details say where."""

    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    code = "malformed_json"


class Reject(Exception):
    """One entry of a request is invalid; ``reason`` is a metrics label, ``message`` for the caller."""

    __slots__ = ("reason", "message")

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


# -- body parsing -----------------------------------------------------------------------------------
def _malformed(exc: orjson.JSONDecodeError, line_offset: int | None = None) -> MalformedBody:
    line = exc.lineno if line_offset is None else line_offset
    details = {"position": exc.pos, "line": line, "column": exc.colno}
    where = f"line {line} column {exc.colno} (char {exc.pos})"
    return MalformedBody(f"malformed JSON at {where}: {exc.msg}", details=details)


def parse_body(body: bytes, content_type: str | None) -> tuple[list[Any], bool]:
    """Bytes → (entries, single). JSON object, JSON array, or NDJSON (one object per line).

    ``single`` is True when the body was one JSON object (not an array or NDJSON).
    Raises :class:`MalformedBody` (400) with the line, column and character position.
    """
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if not body.strip():
        raise MalformedBody("empty body: send a JSON object, a JSON array or NDJSON lines")
    if ctype in NDJSON_TYPES:
        return _parse_ndjson(body), False
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise _malformed(exc) from None
    if isinstance(doc, list):
        return doc, False
    return [doc], True


def _parse_ndjson(body: bytes) -> list[Any]:
    lines = [ln for ln in body.split(b"\n") if ln.strip()]
    try:
        # One parse of the joined lines is several times faster than one parse per line.
        return list(orjson.loads(b"[" + b",".join(lines) + b"]"))
    except orjson.JSONDecodeError:
        pass
    out = []
    for lineno, ln in enumerate(body.split(b"\n"), start=1):
        if not ln.strip():
            continue
        try:
            out.append(orjson.loads(ln))
        except orjson.JSONDecodeError as exc:
            raise _malformed(exc, line_offset=lineno) from None
    return out  # unreachable in practice: the joined parse only fails when one line does


# -- field normalisers (shared with the importers' cleaning) ---------------------------------------
def norm_id(v: Any, name: str, max_len: int, required: bool = True) -> str | None:
    """An id as a non-empty string; ints (and integral floats) become their decimal text."""
    if v is None:
        if required:
            raise Reject("missing_field", f"missing field '{name}'")
        return None
    if type(v) is str:
        s = v.strip()
    elif type(v) is int:
        s = str(v)
    elif type(v) is float and v.is_integer():
        s = str(int(v))
    else:
        raise Reject("invalid_type", f"'{name}' must be a string or an integer")
    if not s:
        if required:
            raise Reject("missing_field", f"'{name}' is empty")
        return None
    if len(s) > max_len:
        raise Reject("invalid_value", f"'{name}' is longer than {max_len} characters")
    return s


def norm_tenant(v: Any) -> str:
    """A tenant name: an id of at most 64 characters without control characters (tenants end up
    in Redis keys and in catalog keys, where ``\\x1f`` separates the tenant from the id)."""
    t = cast(str, norm_id(v, "tenant", 64))
    if not t.isprintable():
        raise Reject("invalid_value", "'tenant' must not contain control characters")
    return t


def parse_timestamp(v: Any, name: str = "timestamp", unit: str = "ms") -> int:
    """Epoch milliseconds (UTC) from an int/float in ``unit`` (``s``, ``ms``, ``us``, ``auto``) or ISO 8601."""
    if type(v) is int or type(v) is float:
        x = float(v)
        if not math.isfinite(x):
            raise Reject("invalid_timestamp", f"'{name}' is not finite")
        if unit == "auto":
            # Heuristic for files: seconds until year 5138, then ms, then µs.
            unit = "s" if abs(x) < 1e11 else ("ms" if abs(x) < 1e14 else "us")
        scale = {"s": 1000.0, "ms": 1.0, "us": 0.001}.get(unit)
        if scale is None:
            raise ValueError(f"unknown timestamp unit {unit!r}")
        ms = int(v) if (scale == 1.0 and type(v) is int) else round(x * scale)
    elif type(v) is str:
        try:
            dt = datetime.fromisoformat(v.strip())
        except ValueError:
            raise Reject("invalid_timestamp", f"'{name}' is not epoch ms nor ISO 8601: {v[:40]!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        ms = round(dt.timestamp() * 1000)
    elif isinstance(v, datetime):
        dt = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        ms = round(dt.timestamp() * 1000)
    else:
        raise Reject("invalid_timestamp", f"'{name}' must be epoch milliseconds or an ISO 8601 string")
    if ms < 0 or ms > _MAX_TS_MS:
        raise Reject("invalid_timestamp", f"'{name}' is out of range")
    return ms


def norm_value(v: Any) -> float | None:
    if v is None:
        return None
    if type(v) is float or type(v) is int:
        x = float(v)
        if not math.isfinite(x):
            raise Reject("invalid_value", "'value' must be finite")
        return x
    raise Reject("invalid_type", "'value' must be a number or null")


def norm_str_map(v: Any, name: str) -> dict[str, str]:
    """A flat map of strings; numbers and booleans become text, nested values are refused."""
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Reject("invalid_type", f"'{name}' must be an object of strings")
    if all(type(x) is str for x in v.values()):
        return v
    out = {}
    for k, x in v.items():
        if type(x) is str:
            out[k] = x
        elif type(x) is bool:
            out[k] = "true" if x else "false"
        elif type(x) is int or type(x) is float:
            out[k] = str(x)
        elif x is None:
            continue
        else:
            raise Reject("invalid_type", f"'{name}.{k}' must be a string, number or boolean")
    return out


def norm_str_list(v: Any, name: str) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(type(x) is str or type(x) is int for x in v):
        raise Reject("invalid_type", f"'{name}' must be a list of strings")
    return [str(x) for x in v]


def opt_str(v: Any, name: str, max_len: int) -> str | None:
    if v is None:
        return None
    if type(v) is not str:
        raise Reject("invalid_type", f"'{name}' must be a string or null")
    if len(v) > max_len:
        raise Reject("invalid_value", f"'{name}' is longer than {max_len} characters")
    return v


def map_event_type(event_type: str, value: float | None, rules: Sequence[EventTypeRule]) -> str:
    for rule in rules:
        if rule.applies(event_type, value):
            return rule.to
    return event_type


# -- interactions -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Validated:
    """The outcome of validating one request's entries."""

    events: list[Any] = field(default_factory=list)  # Interaction / ItemUpdate / UserUpdate
    indices: list[int] = field(default_factory=list)  # request index of each event
    client_ids: list[bool] = field(default_factory=list)  # event_id sent by the client (dedupe it)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"index", "error"}
    reasons: dict[str, int] = field(default_factory=dict)  # reason label → count

    def reject(self, index: int, exc: Reject) -> None:
        self.rejected.append({"index": index, "error": exc.message})
        self.reasons[exc.reason] = self.reasons.get(exc.reason, 0) + 1


class EventValidator:
    """Validates and normalises interaction events from the HTTP API."""

    FIELDS: ClassVar[frozenset[str]] = frozenset({
        "event_id", "user_id", "item_id", "event_type", "value", "timestamp", "session_id",
        "request_id", "context", "tenant", "source",
    })  # fmt: skip

    def __init__(self, section: IngestionSection, source: str = "api") -> None:
        self.s = section
        self.aliases = dict(section.event_type_aliases)
        self.rules = tuple(section.event_type_rules)
        self.max_id = section.max_id_length
        self.max_skew = section.max_future_skew_ms
        self.source = source

    def event(self, obj: Any, tenant: str, now: int) -> tuple[Interaction, bool]:
        """One JSON object → (Interaction, event_id came from the client). Raises :class:`Reject`."""
        if type(obj) is not dict:
            raise Reject("not_object", "an event must be a JSON object")
        if not obj.keys() <= self.FIELDS:
            unknown = sorted(obj.keys() - self.FIELDS)
            raise Reject("unknown_field", f"unknown field {unknown[0]!r}" if len(unknown) == 1
                         else f"unknown fields {', '.join(map(repr, unknown))}")  # fmt: skip
        g = obj.get
        max_id = self.max_id
        # Fast paths for the common case (clean strings); anything else goes through the normalisers.
        user_id = g("user_id")
        if type(user_id) is not str or not 0 < len(user_id) <= max_id or user_id.strip() is not user_id:
            user_id = norm_id(user_id, "user_id", max_id)
        item_id = g("item_id")
        if type(item_id) is not str or not 0 < len(item_id) <= max_id or item_id.strip() is not item_id:
            item_id = norm_id(item_id, "item_id", max_id)
        et = g("event_type")
        if type(et) is not str:
            if et is None:
                raise Reject("missing_field", "missing field 'event_type'")
            raise Reject("invalid_type", "'event_type' must be a string")
        if et not in _EVENT_TYPE_SET:
            et = self.aliases.get(et.strip().lower(), et.strip().lower())
            if et not in _EVENT_TYPE_SET:
                raise Reject("invalid_event_type",
                             f"unknown event_type {g('event_type')!r} (one of {', '.join(EVENT_TYPES)})")  # fmt: skip
        value = g("value")
        if value is not None and type(value) is not float:
            value = norm_value(value)
        elif value is not None and not math.isfinite(value):
            raise Reject("invalid_value", "'value' must be finite")
        if self.rules:
            et = map_event_type(et, value, self.rules)
        ts = g("timestamp")
        if ts is None:
            ts = now
        else:
            if type(ts) is not int or ts < 0 or ts > _MAX_TS_MS:
                ts = parse_timestamp(ts)
            if ts > now + self.max_skew:
                raise Reject("future_timestamp",
                             f"'timestamp' is {(ts - now) // 1000}s in the future "
                             f"(at most {self.max_skew // 1000}s allowed)")  # fmt: skip
        eid = g("event_id")
        client_id = eid is not None
        if not client_id:
            eid = new_id()
        elif type(eid) is not str or not 0 < len(eid) <= max_id or eid.strip() is not eid:
            eid = norm_id(eid, "event_id", max_id)
        t = g("tenant")
        if t is not None:
            t = norm_tenant(t)
        ctx = g("context")
        sess = g("session_id")
        if sess is not None and (type(sess) is not str or len(sess) > max_id):
            sess = opt_str(sess, "session_id", max_id)
        req = g("request_id")
        if req is not None and (type(req) is not str or len(req) > max_id):
            req = opt_str(req, "request_id", max_id)
        src = g("source")
        return Interaction(
            eid,
            user_id,
            item_id,
            et,
            value,
            ts,
            sess,
            req,
            norm_str_map(ctx, "context") if ctx else {},
            t or tenant,
            (opt_str(src, "source", 64) or self.source) if src is not None else self.source,
        ), client_id

    def batch(self, entries: Sequence[Any], tenant: str, now: int | None = None) -> Validated:
        """Validate every entry; valid ones are kept even when others are rejected."""
        now = now_ms() if now is None else now
        out = Validated()
        ev_append, idx_append, cid_append = out.events.append, out.indices.append, out.client_ids.append
        one = self.event
        for i, obj in enumerate(entries):
            try:
                ev, cid = one(obj, tenant, now)
            except Reject as exc:
                out.reject(i, exc)
                continue
            ev_append(ev)
            idx_append(i)
            cid_append(cid)
        return out


# -- catalog ----------------------------------------------------------------------------------------
ITEM_FIELDS = frozenset({"item_id", "title", "categories", "attributes", "available", "created_at", "tenant"})
USER_FIELDS = frozenset({"user_id", "attributes", "segments", "created_at", "tenant"})


def _check_fields(obj: Any, allowed: frozenset[str], what: str) -> None:
    if type(obj) is not dict:
        raise Reject("not_object", f"{what} must be a JSON object")
    unknown = sorted(obj.keys() - allowed)
    if unknown:
        raise Reject("unknown_field", f"unknown field {unknown[0]!r}" if len(unknown) == 1
                     else f"unknown fields {', '.join(map(repr, unknown))}")  # fmt: skip


def validate_item(obj: Any, tenant: str, now: int, max_id: int = 256, item_id: str | None = None) -> ItemUpdate:
    """A catalog item; ``item_id`` from the path wins over (and must match) the body's."""
    _check_fields(obj, ITEM_FIELDS, "an item")
    body_id = norm_id(obj.get("item_id"), "item_id", max_id, required=item_id is None)
    if item_id is not None and body_id is not None and body_id != item_id:
        raise Reject("invalid_value", f"'item_id' {body_id!r} does not match the path's {item_id!r}")
    avail = obj.get("available", True)
    if type(avail) is not bool:
        raise Reject("invalid_type", "'available' must be a boolean")
    title = obj.get("title")
    if title is not None and type(title) is not str:
        raise Reject("invalid_type", "'title' must be a string")
    created = obj.get("created_at")
    t = obj.get("tenant")
    return ItemUpdate(
        item_id=item_id or body_id,  # type: ignore[arg-type]
        tenant=norm_tenant(t) if t is not None else tenant,
        title=title,
        categories=norm_str_list(obj.get("categories"), "categories"),
        attributes=norm_str_map(obj.get("attributes"), "attributes"),
        available=avail,
        created_at=None if created is None else parse_timestamp(created, "created_at"),
        updated_at=now,
    )


def validate_user(obj: Any, tenant: str, now: int, max_id: int = 256, user_id: str | None = None) -> UserUpdate:
    """A user profile; ``user_id`` from the path wins over (and must match) the body's."""
    _check_fields(obj, USER_FIELDS, "a user")
    body_id = norm_id(obj.get("user_id"), "user_id", max_id, required=user_id is None)
    if user_id is not None and body_id is not None and body_id != user_id:
        raise Reject("invalid_value", f"'user_id' {body_id!r} does not match the path's {user_id!r}")
    created = obj.get("created_at")
    t = obj.get("tenant")
    return UserUpdate(
        user_id=user_id or body_id,  # type: ignore[arg-type]
        tenant=norm_tenant(t) if t is not None else tenant,
        attributes=norm_str_map(obj.get("attributes"), "attributes"),
        segments=norm_str_list(obj.get("segments"), "segments"),
        created_at=None if created is None else parse_timestamp(created, "created_at"),
        updated_at=now,
    )


def validate_catalog_batch(
    entries: Sequence[Any], kind: str, tenant: str, now: int | None = None, max_id: int = 256
) -> Validated:
    """Validate a batch of items (``kind="item"``) or users (``kind="user"``)."""
    now = now_ms() if now is None else now
    fn = validate_item if kind == "item" else validate_user
    out = Validated()
    for i, obj in enumerate(entries):
        try:
            ev = fn(obj, tenant, now, max_id)
        except Reject as exc:
            out.reject(i, exc)
            continue
        out.events.append(ev)
        out.indices.append(i)
        out.client_ids.append(False)
    return out
