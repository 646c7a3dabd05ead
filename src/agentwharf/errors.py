"""One exception tree; each class is one error code with its HTTP status.

    AgentwharfError                500 INTERNAL_ERROR
     ├── InvalidParameter          400 INVALID_PARAMETER_VALUE
     │    ├── PayloadTooLarge      413 INVALID_PARAMETER_VALUE
     │    └── HeadersTooLarge      431 INVALID_PARAMETER_VALUE
     ├── BadRequest                400 BAD_REQUEST
     ├── ResourceLimitExceeded     400 RESOURCE_LIMIT_EXCEEDED
     ├── Unauthenticated           401 UNAUTHENTICATED
     ├── PermissionDenied          403 PERMISSION_DENIED
     ├── NotFound                  404 RESOURCE_DOES_NOT_EXIST
     │    └── RouteNotFound        404 ENDPOINT_NOT_FOUND
     ├── MethodNotAllowed          405 METHOD_NOT_ALLOWED
     ├── RequestTimeout            408 REQUEST_TIMEOUT
     ├── AlreadyExists             409 RESOURCE_ALREADY_EXISTS
     ├── Conflict                  409 RESOURCE_CONFLICT
     ├── UnsupportedMediaType      415 UNSUPPORTED_MEDIA_TYPE
     ├── RequestLimitExceeded      429 REQUEST_LIMIT_EXCEEDED   (Retry-After)
     ├── ModelError                500 MODEL_ERROR
     ├── DeploymentFailed          500 DEPLOYMENT_FAILED
     ├── NotImplementedByPlatform  501 NOT_IMPLEMENTED
     ├── BadGateway                502 BAD_GATEWAY              (an LLM provider failed or is down)
     ├── Unavailable               503 TEMPORARILY_UNAVAILABLE  (Retry-After)
     │    └── MlflowUnavailable    503 TEMPORARILY_UNAVAILABLE
     ├── DeadlineExceeded          504 DEADLINE_EXCEEDED
     ├── InsufficientStorage       507 INSUFFICIENT_STORAGE
     └── InvalidConfiguration      500 INVALID_CONFIGURATION    (at start: `agentwharf up` says why)

Routes raise these; one function per server turns them into the JSON body
``{"error_code": ..., "message": ...}`` (``error_body``), the shape Databricks' clients parse.
A client turns such a body back into the same class (``from_response``), so ``except NotFound``
works on both sides of the wire. Errors that come from elsewhere (MLflow's own codes) keep
their code and status in ``ForeignError``.
"""

from __future__ import annotations

import orjson


class AgentwharfError(Exception):
    """Base of every error agentwharf raises on purpose; carries a Databricks-style code."""

    error_code = "INTERNAL_ERROR"
    http_status = 500
    #: Seconds a client should wait before retrying (sent as ``Retry-After``); None: do not retry.
    retry_after: float | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}

    def error_body(self) -> bytes:
        """The JSON body every agentwharf server answers with."""
        return orjson.dumps(self.to_json())

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Response headers that go with the body (``Retry-After`` when retrying helps)."""
        if self.retry_after is None:
            return []
        return [(b"retry-after", str(max(1, round(self.retry_after))).encode())]


class InvalidParameter(AgentwharfError):
    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class PayloadTooLarge(InvalidParameter):
    """A request body over the platform's limit; refused before the rest is read."""

    http_status = 413


class HeadersTooLarge(InvalidParameter):
    """A request line and headers over the platform's limit; the connection is closed."""

    http_status = 431


class BadRequest(AgentwharfError):
    error_code = "BAD_REQUEST"
    http_status = 400


class ResourceLimitExceeded(AgentwharfError):
    error_code = "RESOURCE_LIMIT_EXCEEDED"
    http_status = 400


class Unauthenticated(AgentwharfError):
    error_code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(AgentwharfError):
    error_code = "PERMISSION_DENIED"
    http_status = 403


class NotFound(AgentwharfError):
    error_code = "RESOURCE_DOES_NOT_EXIST"
    http_status = 404


class RouteNotFound(NotFound):
    """No such path (as opposed to a path naming a thing that does not exist)."""

    error_code = "ENDPOINT_NOT_FOUND"


class MethodNotAllowed(AgentwharfError):
    error_code = "METHOD_NOT_ALLOWED"
    http_status = 405


class RequestTimeout(AgentwharfError):
    """The client took too long to send its request."""

    error_code = "REQUEST_TIMEOUT"
    http_status = 408


class AlreadyExists(AgentwharfError):
    error_code = "RESOURCE_ALREADY_EXISTS"
    http_status = 409


class Conflict(AgentwharfError):
    error_code = "RESOURCE_CONFLICT"
    http_status = 409


class UnsupportedMediaType(AgentwharfError):
    error_code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415


class RequestLimitExceeded(AgentwharfError):
    error_code = "REQUEST_LIMIT_EXCEEDED"
    http_status = 429

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


class ModelError(AgentwharfError):
    """The served model's own code raised; the message is the model's."""

    error_code = "MODEL_ERROR"
    http_status = 500


class DeploymentFailed(AgentwharfError):
    error_code = "DEPLOYMENT_FAILED"
    http_status = 500


class NotImplementedByPlatform(AgentwharfError):
    """A Databricks feature agentwharf does not serve; the message names it."""

    error_code = "NOT_IMPLEMENTED"
    http_status = 501


class BadGateway(AgentwharfError):
    """Something the platform calls on the caller's behalf (an LLM endpoint's provider) could
    not be reached or answered with an error of its own; the message says which and why."""

    error_code = "BAD_GATEWAY"
    http_status = 502


class Unavailable(AgentwharfError):
    """Retrying soon may succeed (a worker restarting, the platform starting, back-pressure)."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    http_status = 503
    retry_after = 1.0


class MlflowUnavailable(Unavailable):
    """The platform's MLflow server did not answer, or answered with an error of its own."""


class DeadlineExceeded(AgentwharfError):
    """Something the platform waited on (a model, MLflow) took too long to answer."""

    error_code = "DEADLINE_EXCEEDED"
    http_status = 504


class InsufficientStorage(AgentwharfError):
    """The disk under the platform's home is nearly full; an operator must free space."""

    error_code = "INSUFFICIENT_STORAGE"
    http_status = 507


class InvalidConfiguration(AgentwharfError):
    """The platform's settings name something it cannot use (a database it cannot reach, an
    artifact store it cannot write); found before it starts, the message says what to fix."""

    error_code = "INVALID_CONFIGURATION"
    http_status = 500


class ForeignError(AgentwharfError):
    """An error another system answered (MLflow's server, say), with its code and status."""

    def __init__(self, message: str, error_code: str, http_status: int):
        super().__init__(message)
        self.error_code = error_code
        self.http_status = http_status


def _all_classes() -> list[type[AgentwharfError]]:
    found, pending = [], [AgentwharfError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls is not ForeignError and cls.__module__ == __name__]


def class_for(error_code: str, http_status: int | None = None) -> type[AgentwharfError] | None:
    """The class of the tree for a code (and status, where one code has two statuses)."""
    matches = [cls for cls in _all_classes() if cls.error_code == error_code]
    exact = [cls for cls in matches if cls.http_status == http_status]
    return (exact or matches or [None])[0]


def status_for(error_code: str) -> int:
    """The HTTP status of an error code (500 for a code agentwharf does not know)."""
    cls = class_for(error_code)
    return cls.http_status if cls is not None else 500


def from_json(body: object, http_status: int, fallback_message: str = "") -> AgentwharfError:
    """The error a server answered, as the class of the tree it names (a client's view).

    A body that is not agentwharf's JSON shape (a proxy's HTML page, say) becomes a
    ``ForeignError`` with the HTTP status and the text it came with.
    """
    if isinstance(body, dict) and isinstance(body.get("error_code"), str):
        code, message = body["error_code"], str(body.get("message", fallback_message))
    else:
        return ForeignError(fallback_message or f"HTTP {http_status}", "INTERNAL_ERROR", http_status)
    cls = class_for(code, http_status)
    return ForeignError(message, code, http_status) if cls is None else cls(message)
