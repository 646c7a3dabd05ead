"""What a person sees in the browser: the serving console, the playground and the review app.
Server-rendered pages (Jinja2) with a little plain JavaScript, served from the platform itself:
nothing to build, nothing fetched from another host.

    session       sign-in and sign-out (the cookie, CSRF)
    console       endpoints, one endpoint's versions/workers/permissions/charts, worker logs
    rollout_panel an endpoint's rollout: split, step, gates with their verdicts, decisions
    charts        the console's per-minute figures from the inference table
    quality_panel the console's scorer, feedback and alert figures from production monitoring
    playground    chat with an endpoint or a version; answers' traces; thumbs up/down feedback
    review        the review app: instructions, chat, labeling sessions (MLflow review queues)
    conversation  a trace's request and response as chat turns
    mlflow_rest   the MLflow calls the pages make, as the signed-in caller
    console_link  a link from MLflow's UI to the console

Only the platform (the composition root) imports this package; the core never does (checked
by ``tests/unit/test_layering.py``).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agentwharf import errors
from agentwharf.errors import AgentwharfError
from agentwharf.web.sign_in import SIGN_IN_PATH, SIGN_OUT_PATH
from agentwharf.web import console, playground, review, session
from agentwharf.web.console_link import with_console_link
from agentwharf.web.context import WebContext
from agentwharf.web.render import environment, error_response

STATIC_PREFIX = "/static-agentwharf/"
#: Answered before authentication: signing in and the files the sign-in page loads.
PUBLIC_PATHS = (SIGN_IN_PATH, SIGN_OUT_PATH)
PUBLIC_PREFIXES = (STATIC_PREFIX,)
#: The pages (after authentication).
PREFIXES = ("/serving/", "/serving", review.PREFIX)

__all__ = ["PREFIXES", "PUBLIC_PATHS", "PUBLIC_PREFIXES", "WebContext", "create_web_app", "with_console_link"]


def _routes() -> list:
    endpoint = "/serving/endpoints/{name}"
    return [
        Route(SIGN_IN_PATH, session.sign_in_form, methods=["GET"]),
        Route(SIGN_IN_PATH, session.sign_in, methods=["POST"]),
        Route(SIGN_OUT_PATH, session.sign_out, methods=["POST"]),
        Mount(STATIC_PREFIX.rstrip("/"), app=StaticFiles(directory=Path(__file__).parent / "static"), name="static"),
        Route("/serving", console.endpoint_list, methods=["GET"]),
        Route("/serving/", console.endpoint_list, methods=["GET"]),
        Route(endpoint, console.endpoint_page, methods=["GET"]),
        Route(endpoint + "/metrics.json", console.endpoint_metrics, methods=["GET"]),
        Route(endpoint + "/quality.json", console.endpoint_quality, methods=["GET"]),
        Route(endpoint + "/permissions", console.set_permission, methods=["POST"]),
        Route(endpoint + "/rollout/promote", console.promote_rollout, methods=["POST"]),
        Route(endpoint + "/rollout/abort", console.abort_rollout, methods=["POST"]),
        Route(endpoint + "/versions/{entity}/logs", console.log_page, methods=["GET"]),
        Route(endpoint + "/versions/{entity}/logs.txt", console.log_text, methods=["GET"]),
        Route(endpoint + "/playground", playground.playground_page, methods=["GET"]),
        Route("/serving/api/endpoints/{name}/requests/{request_id}", playground.request_info, methods=["GET"]),
        Route("/serving/api/endpoints/{name}/feedback", playground.feedback, methods=["POST"]),
        Route(review.PREFIX, review.home, methods=["GET"]),
        Route(review.PREFIX + "/", review.home, methods=["GET"]),
        Route(review.PREFIX + "/chat", review.chat, methods=["GET"]),
        Route(review.PREFIX + "/sessions/{queue_id}", review.session_page, methods=["GET"]),
        Route(review.PREFIX + "/sessions/{queue_id}/items/{trace_id}", review.save_labels, methods=["POST"]),
    ]


_HTTP_ERRORS = {404: errors.RouteNotFound, 405: errors.MethodNotAllowed}


def create_web_app(context: WebContext) -> Starlette:
    app = Starlette(routes=_routes())
    app.state.web = context
    app.state.templates = environment()

    async def domain_error(request: Request, error: AgentwharfError):
        return error_response(request, error)

    async def http_error(request: Request, error: HTTPException):
        cls = _HTTP_ERRORS.get(error.status_code, errors.BadRequest)
        message = f"There is no page {request.url.path}" if error.status_code == 404 else str(error.detail)
        return error_response(request, cls(message))

    async def unexpected(request: Request, error: Exception):
        # Logged by the platform's front door, which sees it re-raised; the person gets a page.
        rid = request.scope.get("agentwharf.request_id", "-")
        return error_response(request, AgentwharfError(f"Internal error (request {rid}); see the platform log"))

    app.add_exception_handler(AgentwharfError, domain_error)
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(HTTPException, http_error)
    return app
