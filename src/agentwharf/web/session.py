"""Signing in and out of the pages: the token goes into an ``HttpOnly``, ``SameSite=Strict``
cookie that the front door reads like a bearer token (``auth.gatekeeper``).

CSRF: the cookie is ``SameSite=Strict`` (browsers never send it with a request started by
another site) and every state-changing request carried by it must come from the platform's own
pages (``Origin`` check, in the front door for every route and here for the sign-in form, which
is answered before authentication).
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from agentwharf.auth.gatekeeper import COOKIE, same_origin
from agentwharf.errors import Unauthenticated
from agentwharf.web.sign_in import SIGN_IN_PATH, safe_next, sign_in_page
from agentwharf.web.context import context_of

#: The most of a sign-in form that is read (a token is ~50 characters).
_FORM_BYTES = 8192


def _page(message: str | None, next_path: str | None, status: int) -> Response:
    return Response(sign_in_page(message, next_path), status_code=status, media_type="text/html",
                    headers={"cache-control": "no-store"})


async def sign_in_form(request: Request) -> Response:
    return _page(request.query_params.get("m"), request.query_params.get("next"), 200)


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _FORM_BYTES:
            break
    fields = parse_qs(body[:_FORM_BYTES].decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[0] for key, values in fields.items()}


async def sign_in(request: Request) -> Response:
    form = await _form(request)
    next_path = safe_next(form.get("next"))
    if not same_origin(request.scope):
        return _page("cross-site", next_path, 403)
    token = form.get("token", "").strip()
    if not token:
        return _page("empty", next_path, 400)
    gatekeeper = context_of(request).control.gatekeeper
    try:
        caller = gatekeeper.authenticate({"headers": [(b"authorization", f"Bearer {token}".encode("latin-1", "replace"))]})
    except Unauthenticated:
        return _page("invalid", next_path, 401)
    if not caller.is_personal:
        return _page("worker", next_path, 401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


async def sign_out(request: Request) -> Response:
    if request.method == "POST" and not same_origin(request.scope):
        return _page("cross-site", None, 403)
    response = RedirectResponse(f"{SIGN_IN_PATH}?m=signed-out&next={quote('/serving/')}", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
