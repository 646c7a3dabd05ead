"""The serving gateway: a bare ASGI app for ``/serving-endpoints/...``.

Routes:
    POST /serving-endpoints/{name}/invocations                          traffic split
    POST /serving-endpoints/{name}/served-models/{entity}/invocations   one version
    POST /serving-endpoints/responses                                   OpenAI Responses API

It is plain ASGI rather than a FastAPI router because it sits on the hot path: it forwards the
raw body to a worker without parsing it (the worker validates it anyway), and only the OpenAI
route reads the JSON, to find ``model``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import orjson

from agentwharf.errors import AgentwharfError, InvalidParameter, NotFound, Unavailable, UnsupportedMediaType
from agentwharf.serving.routing import RouteTable
from agentwharf.serving.supervisor import Supervisor
from agentwharf.serving.worker_client import Reply, WorkerConnection, WorkerGone

log = logging.getLogger("agentwharf.gateway")

PREFIX = "/serving-endpoints/"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
_DONE = b"data: [DONE]\n\n"


async def send_json(send, status: int, body: bytes, extra_headers: list | None = None) -> None:
    headers = _JSON_HEADERS + (extra_headers or [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, error: AgentwharfError, extra_headers: list | None = None) -> None:
    await send_json(send, error.http_status, orjson.dumps(error.to_json()), extra_headers)


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _check_media_type(scope: dict) -> None:
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return
    media = content_type.split(b";", 1)[0].strip().lower()
    if media not in (b"application/json", b"") and not media.endswith(b"+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {content_type.decode(errors='replace')!r}")


class Gateway:
    def __init__(self, routes: RouteTable, supervisor: Supervisor, request_timeout: float):
        self.routes = routes
        self.supervisor = supervisor
        self.request_timeout = request_timeout

    async def __call__(self, scope, receive, send) -> None:
        request_id = (_header(scope, b"x-request-id") or b"").decode()[:128] or uuid.uuid4().hex
        id_header = [(b"x-request-id", request_id.encode())]
        try:
            if scope["method"] != "POST":
                raise AgentwharfError(f"{scope['method']} is not allowed here; use POST", "METHOD_NOT_ALLOWED")
            parts = scope["path"][len(PREFIX):].strip("/").split("/")
            _check_media_type(scope)
            body = await read_body(receive)
            key, meta = self._resolve(parts, body)
            meta["request_id"] = request_id
            await self._forward(key, meta, body, receive, send, id_header)
        except ConnectionAbortedError:
            return
        except AgentwharfError as error:
            headers = id_header + ([(b"retry-after", b"1")] if isinstance(error, Unavailable) else [])
            await send_error(send, error, headers)

    def _resolve(self, parts: list[str], body: bytes) -> tuple[str, dict[str, Any]]:
        """Map the path (and, for the OpenAI route, the body's ``model``) to a worker key."""
        if parts == ["responses"]:
            return self._resolve_openai(body)
        if len(parts) == 2 and parts[1] == "invocations":
            endpoint = self._endpoint(parts[0])
            key = endpoint.pick()
            if key is None:
                raise Unavailable(f"Endpoint {parts[0]!r} has no served version with traffic yet")
            return key, {"route": "invocations", "endpoint": parts[0]}
        if len(parts) == 4 and parts[1] == "served-models" and parts[3] == "invocations":
            endpoint = self._endpoint(parts[0])
            key = endpoint.entities.get(parts[2])
            if key is None:
                raise NotFound(f"Served model {parts[2]!r} does not exist on endpoint {parts[0]!r}")
            return key, {"route": "invocations", "endpoint": parts[0]}
        raise NotFound(f"No such serving route: /serving-endpoints/{'/'.join(parts)}", "ENDPOINT_NOT_FOUND")

    def _resolve_openai(self, body: bytes) -> tuple[str, dict[str, Any]]:
        try:
            model = orjson.loads(body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            raise InvalidParameter("Request body must be a JSON object with 'model' and 'input'") from None
        if not isinstance(model, str) or not model:
            raise InvalidParameter("'model' is required: the name of the serving endpoint to query")
        key = self._endpoint(model).pick()
        if key is None:
            raise Unavailable(f"Endpoint {model!r} has no served version with traffic yet")
        return key, {"route": "responses", "endpoint": model, "model": model}

    def _endpoint(self, name: str):
        endpoint = self.routes.get(name)
        if endpoint is None:
            raise NotFound(f"Endpoint {name!r} does not exist")
        return endpoint

    async def _forward(self, key: str, meta: dict, body: bytes, receive, send, id_header: list) -> None:
        connection = await self.supervisor.acquire(key)
        connection.in_flight += 1
        try:
            try:
                reply = await connection.request(meta, body, self.request_timeout)
            except WorkerGone:
                raise Unavailable(f"The worker for {key} stopped before answering; retry shortly") from None
            except asyncio.TimeoutError:
                raise AgentwharfError(f"The model did not answer within {self.request_timeout:.0f}s", "REQUEST_TIMEOUT") from None
            if not reply.stream:
                await send_json(send, reply.status, reply.body, id_header)
                return
            await self._stream(connection, reply, receive, send, id_header)
        finally:
            connection.in_flight -= 1

    async def _stream(self, connection: WorkerConnection, reply: Reply, receive, send, id_header: list) -> None:
        """Relay events as server-sent events; stop the worker's stream if the client leaves."""

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            # Tell the worker first, so its thread stops at the agent's next yield even if the
            # agent is blocked on a slow call right now, then end our relay loop.
            connection.cancel(reply.stream_id)
            reply.abort()

        watcher = asyncio.create_task(watch_disconnect(), name="sse-disconnect-watch")
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + id_header})
        try:
            async for event, error in reply.events():
                if event:
                    await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
                else:
                    tail = (b"data: " + error + b"\n\n" if error else b"") + _DONE
                    await send({"type": "http.response.body", "body": tail, "more_body": False})
        except OSError:
            connection.cancel(reply.stream_id)
        finally:
            watcher.cancel()
