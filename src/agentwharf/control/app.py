"""The control plane's FastAPI app: its routes and the one place errors become JSON.

Routers of outer layers (``databricks_compat``'s facades, which are built on the control plane)
are handed in by the platform, so the control plane never imports them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from agentwharf import __version__
from agentwharf.control import (access_routes, api_docs, diagnostics_routes, monitoring_routes, review_instructions,
                                rollout_routes, routes, scim_routes, token_routes)
from agentwharf.control.routes import ControlState
from agentwharf import errors
from agentwharf.errors import AgentwharfError

log = logging.getLogger("agentwharf.control")

#: The control plane's own routers (the platform's extra routers, the Databricks facades, follow them).
ROUTERS = (api_docs.router, routes.router, diagnostics_routes.router, access_routes.router, token_routes.router,
           scim_routes.router, review_instructions.router, rollout_routes.router, monitoring_routes.router)

#: Starlette's own refusals (no route, wrong method, ...) as errors of the tree.
_HTTP_ERRORS = {404: errors.RouteNotFound, 405: errors.MethodNotAllowed, 413: errors.PayloadTooLarge,
                415: errors.UnsupportedMediaType}


class OrjsonResponse(JSONResponse):
    """A JSON answer rendered by orjson: FastAPI's own ``ORJSONResponse`` is deprecated (0.120 on)
    and said so on the console of every platform at its first control answer."""

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def _json_error(error: AgentwharfError) -> OrjsonResponse:
    response = OrjsonResponse(error.to_json(), status_code=error.http_status)
    for key, value in error.headers():
        response.headers[key.decode()] = value.decode()
    return response


def request_id(request: Request) -> str:
    """The platform's id of this request (set by the front door), for logs and error bodies."""
    return request.scope.get("agentwharf.request_id", "-")


def create_control_app(state: ControlState, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The control plane's app over ``state``, with ``extra_routers`` mounted after its own
    (in their order)."""
    app = FastAPI(title="agentwharf control plane", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=api_docs.OPENAPI_PATH, default_response_class=OrjsonResponse,
                  description="Serving endpoints, agent deployments, identities, tokens and permissions, in the "
                              "paths and shapes of Databricks' REST API.")
    app.state.control = state
    for own_router in ROUTERS:
        app.include_router(own_router)
    for extra in extra_routers:
        app.include_router(extra)

    @app.exception_handler(AgentwharfError)
    async def _domain_error(request: Request, error: AgentwharfError):
        if error.http_status >= 500:
            log.error("%s %s failed (request %s): %s", request.method, request.url.path, request_id(request), error.message)
        return _json_error(error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError):
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()[:5])
        return _json_error(errors.InvalidParameter(details))

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, error: HTTPException):
        cls = _HTTP_ERRORS.get(error.status_code, errors.BadRequest)
        message = f"No route {request.method} {request.url.path}" if error.status_code in (404, 405) else str(error.detail)
        return _json_error(cls(message))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        # Never a stack trace to the client: log it, answer with the request's id.
        rid = request_id(request)
        log.exception("unexpected error in %s %s (request %s)", request.method, request.url.path, rid)
        return _json_error(AgentwharfError(f"Internal error while handling {request.method} {request.url.path} "
                                           f"(request {rid}); see the platform log"))

    return app
