"""MLflow's tracking REST as a client with ``MLFLOW_TRACKING_URI=databricks`` must see it.

Both kinds of client call the same paths (``/api/2.0/mlflow/...``) but can use different artifact
URIs: MLflow's own client resolves ``mlflow-artifacts:/...`` against its http tracking URI, while
the Databricks client has no such URI and reaches artifacts only through
``dbfs:/databricks/mlflow-tracking/<experiment>/...`` (and from there the Files API). So:

- MLflow stores and returns its own URIs, unchanged for MLflow's client and UI. Storing the
  Databricks form instead would break them, and rewriting for everyone would break MLflow's
  client.
- For a Databricks client, told apart by the ``databricks-sdk-py/`` User-Agent its SDK-based
  transport always sends (MLflow's own client sends ``mlflow-python-client/``), the JSON answer's
  ``artifact_location`` and ``artifact_uri`` fields are shown in the Databricks form
  (uris.to_databricks_uri). Only those fields are touched, never tags, params or user data.
- A Databricks client outside a notebook with no experiment set creates runs in experiment
  ``"None"``; it gets MLflow's Default experiment ("0"), as MLflow's own client would.
"""

from __future__ import annotations

from typing import Any

import orjson

from agentwharf.databricks_compat.uris import to_databricks_uri

_TRACKING = "/api/2.0/mlflow/"
_URI_FIELDS = ("artifact_location", "artifact_uri")
_DATABRICKS_AGENT = b"databricks-sdk-py/"
_CREATE_RUN = "/api/2.0/mlflow/runs/create"
#: MLflow's default experiment; where a run that names no experiment goes.
DEFAULT_EXPERIMENT_ID = "0"


def is_databricks_client(scope: dict) -> bool:
    return any(k == b"user-agent" and _DATABRICKS_AGENT in v for k, v in scope["headers"])


def databricks_view(value: Any) -> Any:
    """``value`` (parsed JSON) with every artifact URI field in the Databricks form."""
    if isinstance(value, dict):
        return {k: to_databricks_uri(v) if k in _URI_FIELDS and isinstance(v, str) else databricks_view(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [databricks_view(v) for v in value]
    return value


def default_experiment(body: bytes) -> bytes:
    """A runs/create body with a missing or ``"None"`` experiment id sent to the Default one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(data, dict) or data.get("experiment_id") not in (None, "", "None"):
        return body
    return orjson.dumps({**data, "experiment_id": DEFAULT_EXPERIMENT_ID})


def _rewrite(start: dict, body: bytes) -> bytes:
    content_type = next((v for k, v in start.get("headers", []) if k.lower() == b"content-type"), b"")
    if start.get("status") != 200 or b"json" not in content_type:
        return body
    try:
        return orjson.dumps(databricks_view(orjson.loads(body)))
    except orjson.JSONDecodeError:
        return body


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


class DatabricksTrackingView:
    """Wraps the MLflow proxy (an ASGI app); anything not from a Databricks client, or not
    tracking REST, passes straight through."""

    def __init__(self, proxy):
        self.proxy = proxy

    async def __call__(self, scope, receive, send) -> None:
        if not (scope["type"] == "http" and scope["path"].startswith(_TRACKING) and is_databricks_client(scope)):
            await self.proxy(scope, receive, send)
            return
        # An encoded answer could not be rewritten: ask MLflow for plain bytes.
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"accept-encoding"]}
        if scope["method"] == "POST" and scope["path"] == _CREATE_RUN:
            body = default_experiment(await _read_body(receive))
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope["headers"] = [*headers, (b"content-length", str(len(body)).encode())]
            receive = _replay(body, receive)
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _rewrite(start, b"".join(chunks))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.proxy(scope, receive, capture)

    async def close(self) -> None:
        await self.proxy.close()


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
