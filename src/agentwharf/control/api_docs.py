"""The control plane described: its OpenAPI document at ``/api/2.0/openapi.json`` (what
schemathesis and client generators read) and a page listing every route at ``/api/2.0/docs``.

The page is rendered here from the same document, with no script or stylesheet from elsewhere:
the platform works without any network but its own.
"""

from __future__ import annotations

import html

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

OPENAPI_PATH = "/api/2.0/openapi.json"
DOCS_PATH = "/api/2.0/docs"
router = APIRouter()

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#1b1f24}"
          "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;"
          "text-align:left;vertical-align:top}code{font-size:.95em}.m{font-weight:600;width:5rem}")


@router.get(DOCS_PATH, include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    spec = request.app.openapi()
    rows = []
    for path, operations in sorted(spec.get("paths", {}).items()):
        for method, operation in operations.items():
            text = operation.get("description") or operation.get("summary") or ""
            rows.append(f"<tr><td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{html.escape(text).replace(chr(10), '<br>')}</td></tr>")
    body = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>agentwharf REST API</title>"
            f"<style>{_STYLE}</style></head><body><h1>agentwharf REST API</h1>"
            f"<p>Every route needs <code>Authorization: Bearer &lt;token&gt;</code>. The machine-readable description "
            f"is <a href=\"{OPENAPI_PATH}\"><code>{OPENAPI_PATH}</code></a>; MLflow's own REST API is served "
            f"unchanged at the same base URL.</p><table><thead><tr><th>method</th><th>path</th><th>what</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></body></html>")
    return HTMLResponse(body)
