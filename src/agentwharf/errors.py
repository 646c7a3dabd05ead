"""One exception tree, one table from error code to HTTP status.

    AgentwharfError
     ├── InvalidParameter          400 INVALID_PARAMETER_VALUE
     ├── ResourceLimitExceeded     400 RESOURCE_LIMIT_EXCEEDED
     ├── Unauthenticated           401 UNAUTHENTICATED
     ├── PermissionDenied          403 PERMISSION_DENIED
     ├── NotFound                  404 RESOURCE_DOES_NOT_EXIST
     ├── AlreadyExists             409 RESOURCE_ALREADY_EXISTS
     ├── UnsupportedMediaType      415 UNSUPPORTED_MEDIA_TYPE
     ├── DeploymentFailed          500 DEPLOYMENT_FAILED
     └── Unavailable               503 TEMPORARILY_UNAVAILABLE

The JSON body is ``{"error_code": ..., "message": ...}``, the shape Databricks' clients parse.
"""

from __future__ import annotations

HTTP_STATUS = {
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "RESOURCE_LIMIT_EXCEEDED": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "RESOURCE_ALREADY_EXISTS": 409,
    "RESOURCE_CONFLICT": 409,
    "REQUEST_TIMEOUT": 504,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "INTERNAL_ERROR": 500,
    "DEPLOYMENT_FAILED": 500,
    "NOT_IMPLEMENTED": 501,
    "TEMPORARILY_UNAVAILABLE": 503,
}


def status_for(error_code: str) -> int:
    return HTTP_STATUS.get(error_code, 500)


class AgentwharfError(Exception):
    """Base of every error agentwharf raises on purpose; carries a Databricks-style code."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, error_code: str | None = None):
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code

    @property
    def http_status(self) -> int:
        return status_for(self.error_code)

    def to_json(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


class InvalidParameter(AgentwharfError):
    error_code = "INVALID_PARAMETER_VALUE"


class ResourceLimitExceeded(AgentwharfError):
    error_code = "RESOURCE_LIMIT_EXCEEDED"


class Unauthenticated(AgentwharfError):
    error_code = "UNAUTHENTICATED"


class PermissionDenied(AgentwharfError):
    error_code = "PERMISSION_DENIED"


class NotFound(AgentwharfError):
    error_code = "RESOURCE_DOES_NOT_EXIST"


class AlreadyExists(AgentwharfError):
    error_code = "RESOURCE_ALREADY_EXISTS"


class UnsupportedMediaType(AgentwharfError):
    error_code = "UNSUPPORTED_MEDIA_TYPE"


class DeploymentFailed(AgentwharfError):
    error_code = "DEPLOYMENT_FAILED"


class Unavailable(AgentwharfError):
    error_code = "TEMPORARILY_UNAVAILABLE"
