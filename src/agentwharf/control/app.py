"""The control plane's FastAPI app: its routes and the one place errors become JSON."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import ORJSONResponse
from starlette.exceptions import HTTPException

from agentwharf import databricks_compat
from agentwharf.control.access_routes import router as access_router
from agentwharf.control.routes import ControlState, router
from agentwharf.errors import AgentwharfError

log = logging.getLogger("agentwharf.control")

_HTTP_CODES = {404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 415: "UNSUPPORTED_MEDIA_TYPE"}


def _json_error(status: int, code: str, message: str) -> ORJSONResponse:
    return ORJSONResponse({"error_code": code, "message": message}, status_code=status)


def create_control_app(state: ControlState) -> FastAPI:
    app = FastAPI(title="agentwharf control plane", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=ORJSONResponse)
    app.state.control = state
    app.include_router(router)
    app.include_router(access_router)
    for compat_router in databricks_compat.ROUTERS:
        app.include_router(compat_router)

    @app.exception_handler(AgentwharfError)
    async def _domain_error(request: Request, error: AgentwharfError):
        if error.http_status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, error.message)
        return _json_error(error.http_status, error.error_code, error.message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
        return _json_error(400, "INVALID_PARAMETER_VALUE", details)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException):
        code = _HTTP_CODES.get(error.status_code, "BAD_REQUEST")
        message = f"No route {request.method} {request.url.path}" if error.status_code in (404, 405) else str(error.detail)
        return _json_error(error.status_code, code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        # Never a stack trace to the client: log it, answer with the request's id.
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _json_error(500, "INTERNAL_ERROR", f"Internal error while handling {request.method} {request.url.path}; see the platform log")

    return app
