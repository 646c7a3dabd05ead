"""A link from MLflow's UI to the serving console: MLflow's page (``GET /``) is served as MLflow
renders it, with one small link added before ``</body>`` (a fixed badge in a corner). MLflow's UI
is a single-page app loaded from that one document, so this is the one place to add it without
a fork; every other answer of MLflow's passes through untouched.
"""

from __future__ import annotations

LINK = (b'<a href="/serving/" id="agentwharf-console-link" style="position:fixed;right:12px;bottom:12px;z-index:2147483647;'
        b'background:#0b5394;color:#fff;padding:6px 12px;border-radius:16px;font:600 13px/1.4 sans-serif;'
        b'text-decoration:none;box-shadow:0 1px 4px rgba(0,0,0,.3)">agentwharf serving console</a>')
#: MLflow's page is a few KB; anything bigger is not the page this is for.
_MAX_PAGE = 1024 * 1024


def _is_page(scope) -> bool:
    return scope["type"] == "http" and scope["method"] == "GET" and scope["path"] in ("/", "/index.html")


def with_console_link(app):
    """Wrap MLflow's proxy so its UI page links to the console."""

    async def wrapped(scope, receive, send) -> None:
        if not _is_page(scope):
            await app(scope, receive, send)
            return
        start: dict | None = None
        chunks: list[bytes] = []
        passing = False

        async def capture(message: dict) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
                return
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                html = headers.get(b"content-type", b"").startswith(b"text/html")
                if message["status"] != 200 or not html or b"content-encoding" in headers:
                    passing = True
                    await send(message)
                    return
                start = message
                return
            chunks.append(message.get("body", b""))
            if sum(map(len, chunks)) > _MAX_PAGE:
                passing = True
                await send(start)
                await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": message.get("more_body", False)})
                return
            if not message.get("more_body"):
                body = b"".join(chunks)
                at = body.rfind(b"</body>")
                if at >= 0:
                    body = body[:at] + LINK + body[at:]
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})

        await app(scope, receive, capture)

    return wrapped
