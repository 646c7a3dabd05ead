"""The 401 answer: JSON for API clients; for a browser opening a page, a sign-in form.

Browsers cannot send ``Authorization`` headers when navigating, so the MLflow UI is reached
with a cookie holding the token. The form sets that cookie in the browser itself
(``SameSite=Strict``, so other sites cannot ride on it) and reloads; the token never travels
in a URL or a form post.
"""

from __future__ import annotations

import orjson

_PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>agentwharf: sign in</title>
<style>body{font-family:sans-serif;max-width:32rem;margin:4rem auto}input{width:100%;padding:.4rem}</style></head>
<body><h1>agentwharf</h1><p>Paste a personal access token to open this page.
(The first start of a platform writes the admin's token to <code>admin.token</code> in its home.)</p>
<form id="signin"><input id="token" type="password" autocomplete="off" placeholder="awp_..." autofocus>
<p><button type="submit">Sign in</button></p></form>
<script>
document.getElementById("signin").addEventListener("submit", function (event) {
  event.preventDefault();
  var token = document.getElementById("token").value.trim();
  document.cookie = "agentwharf_token=" + encodeURIComponent(token) + "; path=/; SameSite=Strict";
  window.location.reload();
});
</script></body></html>"""


def _wants_html(scope: dict) -> bool:
    if scope["method"] != "GET":
        return False
    for key, value in scope["headers"]:
        if key == b"accept":
            return b"text/html" in value
    return False


async def send_unauthenticated(scope, send, error) -> None:
    headers = [(b"www-authenticate", b'Bearer realm="agentwharf"')]
    if _wants_html(scope):
        body, content_type = _PAGE, b"text/html; charset=utf-8"
    else:
        body, content_type = orjson.dumps(error.to_json()), b"application/json"
    await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", content_type), *headers]})
    await send({"type": "http.response.body", "body": body})
