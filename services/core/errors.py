"""One error hierarchy; each error carries its HTTP and gRPC status, translated in one place."""

from __future__ import annotations

from typing import ClassVar


class RecmeshError(Exception):
    """Base of every error Recmesh raises on purpose."""

    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"  # grpc.StatusCode name; core does not import grpc
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: object | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class SchemaError(RecmeshError):
    code = "schema_error"


class DecodeError(RecmeshError):
    """A message could not be decoded (goes to the DLQ)."""

    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    code = "decode_error"


class ValidationError(RecmeshError):
    http_status = 422
    grpc_status = "INVALID_ARGUMENT"
    code = "invalid"


class PayloadTooLarge(RecmeshError):
    http_status = 413
    grpc_status = "RESOURCE_EXHAUSTED"
    code = "too_large"


class Unauthenticated(RecmeshError):
    http_status = 401
    grpc_status = "UNAUTHENTICATED"
    code = "unauthenticated"


class Forbidden(RecmeshError):
    http_status = 403
    grpc_status = "PERMISSION_DENIED"
    code = "forbidden"


class NotFound(RecmeshError):
    http_status = 404
    grpc_status = "NOT_FOUND"
    code = "not_found"


class Backpressure(RecmeshError):
    """The local producer queue is full: the caller should retry later."""

    http_status = 503
    grpc_status = "UNAVAILABLE"
    code = "backpressure"

    def __init__(self, message: str = "producer queue full", *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(RecmeshError):
    """A dependency (broker, Redis, model) is not ready."""

    http_status = 503
    grpc_status = "UNAVAILABLE"
    code = "unavailable"


class TransientError(RecmeshError):
    """A failure worth retrying (dependency down); the consumer runner never commits past it."""

    http_status = 503
    grpc_status = "UNAVAILABLE"
    code = "transient"
