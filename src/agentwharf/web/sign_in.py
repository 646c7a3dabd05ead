"""The 401 answer: JSON for API clients; for a browser opening a page, the sign-in page.

Browsers cannot send ``Authorization`` headers when navigating, so pages (the serving console,
the review app, MLflow's UI) are reached with a cookie holding the token. The form posts the
token to ``/signin`` (``web.session``), which checks it and sets the cookie ``HttpOnly`` (no
script can read it) and ``SameSite=Strict`` (no other site can send it); the token never
travels in a URL. A refused token comes back to this page with a message saying why.

The page shows only messages of its own (``MESSAGES``), never text from the request, and the
page it returns to after sign-in (``next``) is escaped and must be a path on this platform.
"""

from __future__ import annotations

import html

import orjson

SIGN_IN_PATH = "/signin"
SIGN_OUT_PATH = "/signout"
#: What the page can say, by key (``?m=`` on ``/signin``).
MESSAGES = {
    "invalid": "That token is invalid, expired or revoked. Check that you copied all of it, or ask an admin for a new one.",
    "empty": "Paste your personal access token into the box, then sign in.",
    "worker": "That is a credential minted for a model worker; sign in with a personal access token.",
    "signed-out": "You are signed out.",
    "cross-site": "The sign-in form must be sent from this platform's own page. Reload it and try again.",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · agentwharf</title><link rel="stylesheet" href="/static-agentwharf/app.css"></head>
<body class="signin"><main id="main">
<h1>agentwharf</h1>
<p>Sign in with a personal access token to open the serving console, the review app and MLflow.
(An admin creates one with <code>agentwharf tokens create --for NAME</code>; the first start of a platform
writes the admin's token to <code>admin.token</code> in its home.)</p>
{notice}
<form id="signin" method="post" action="/signin">
<label for="token">Personal access token</label>
<input id="token" name="token" type="password" autocomplete="off" spellcheck="false" placeholder="awp_..." required
 aria-describedby="token-help"{invalid} autofocus>
<p id="token-help" class="help">It stays in this browser as a cookie that no script and no other site can read.</p>
<input type="hidden" name="next" id="next" value="{next}">
<p><button type="submit">Sign in</button></p>
</form></main>
<script src="/static-agentwharf/signin.js"></script>
</body></html>"""


def safe_next(path: str | None) -> str:
    """A path on this platform to return to after sign-in (anything else: the console)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path or any(ord(c) < 32 for c in path):
        return "/serving/"
    if path.startswith((SIGN_IN_PATH, SIGN_OUT_PATH)):
        return "/serving/"
    return path


def sign_in_page(message: str | None = None, next_path: str | None = None) -> bytes:
    """The sign-in page; ``message`` is a key of ``MESSAGES`` (others are ignored)."""
    text = MESSAGES.get(message or "")
    is_error = text is not None and message != "signed-out"
    notice = ""
    if text is not None:
        role = "alert" if is_error else "status"
        notice = f'<p id="notice" class="notice {"error" if is_error else "info"}" role="{role}">{html.escape(text)}</p>'
    invalid = ' aria-invalid="true" aria-errormessage="notice"' if is_error else ""
    return _PAGE.format(notice=notice, invalid=invalid, next=html.escape(safe_next(next_path), quote=True)).encode()


def _wants_html(scope: dict) -> bool:
    if scope["method"] != "GET":
        return False
    for key, value in scope["headers"]:
        if key == b"accept":
            return b"text/html" in value
    return False


def _current_path(scope: dict) -> str:
    query = scope.get("query_string") or b""
    return scope.get("path", "/") + ("?" + query.decode("latin-1") if query else "")


async def send_unauthenticated(scope, send, error, message: str | None = None) -> None:
    """401: the sign-in page for a browser opening a page (``message`` says why, e.g.
    ``invalid`` for a cookie that no longer works), JSON for anyone else."""
    headers = [(b"www-authenticate", b'Bearer realm="agentwharf"')]
    if _wants_html(scope):
        body, content_type = sign_in_page(message, _current_path(scope)), b"text/html; charset=utf-8"
        headers.append((b"cache-control", b"no-store"))
    else:
        body, content_type = orjson.dumps(error.to_json()), b"application/json"
    await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", content_type), *headers]})
    await send({"type": "http.response.body", "body": body})
