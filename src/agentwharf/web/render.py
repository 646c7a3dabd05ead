"""Rendering: Jinja2 templates (autoescaped), the page frame's shared values, error pages.

Every page is sent with a Content-Security-Policy that allows scripts, styles and connections
to this platform only: no inline script, nothing from another host (the pages work with no
network but the platform).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from agentwharf.errors import AgentwharfError

TEMPLATES = Path(__file__).parent / "templates"
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def environment() -> Environment:
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                       trim_blocks=True, lstrip_blocks=True)


def page(request: Request, template: str, status: int = 200, **values) -> Response:
    caller = request.scope.get("agentwharf.caller")
    body = request.app.state.templates.get_template(template).render(
        request=request, caller=caller, path=request.url.path, **values)
    return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)


def wants_json(request: Request) -> bool:
    path = request.url.path
    return "/api/" in path or path.endswith((".json", ".txt")) or request.method != "GET" and \
        "application/json" in request.headers.get("content-type", "")


def error_response(request: Request, error: AgentwharfError) -> Response:
    """JSON for the pages' own API calls; a page saying what went wrong for a browser."""
    headers = {k.decode(): v.decode() for k, v in error.headers()}
    if wants_json(request):
        return JSONResponse(error.to_json(), status_code=error.http_status, headers=headers)
    return page(request, "error.html", status=error.http_status, title="Something went wrong", error=error)
