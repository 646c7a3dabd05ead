"""The serving gateway: a bare ASGI app for ``/serving-endpoints/...``.

Routes:
    POST /serving-endpoints/{name}/invocations                          traffic split
    POST /serving-endpoints/{name}/served-models/{entity}/invocations   one version
    POST /serving-endpoints/responses                                   OpenAI Responses API
    POST /serving-endpoints/chat/completions                            OpenAI Chat Completions API

It is plain ASGI rather than a FastAPI router because it sits on the hot path: it forwards the
raw body to a worker without parsing it (the worker validates it anyway), and only the OpenAI
route reads the JSON, to find ``model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

import orjson

from collections.abc import Callable

from agentwharf.auth.caller import Caller
from agentwharf.auth.gatekeeper import Gatekeeper, bearer_token
from agentwharf.auth.levels import PermissionLevel
from agentwharf.errors import AgentwharfError, InvalidParameter, NotFound, PermissionDenied, Unavailable, UnsupportedMediaType
from agentwharf.serving.routing import EndpointRoutes, RouteTable
from agentwharf.serving.supervisor import Supervisor
from agentwharf.serving.worker_client import Reply, WorkerConnection, WorkerGone
from agentwharf.tracing.recorder import Recorder, SpoolFull
from agentwharf.tracing.recorder import header as record_header

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


def _media_type_error(scope: dict) -> UnsupportedMediaType | None:
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return None
    media = content_type.split(b";", 1)[0].strip().lower()
    if media not in (b"application/json", b"") and not media.endswith(b"+json"):
        return UnsupportedMediaType(f"Content-Type must be application/json, got {content_type.decode(errors='replace')!r}")
    return None


@dataclass(slots=True)
class _Request:
    """What the gateway learned about one request so far, for its record."""

    request_id: str
    started: float
    start_ns: int
    body: bytes = b""
    endpoint: EndpointRoutes | None = None
    key: str | None = None
    route: str = "invocations"
    stream: bool = False
    caller: str | None = None
    #: Tokens that must never be stored: the caller's own and any minted for this request.
    secrets: tuple[bytes, ...] = ()


class Gateway:
    def __init__(self, routes: RouteTable, supervisor: Supervisor, recorder: Recorder, request_timeout: float,
                 user_token: Callable[[Caller, tuple[str, ...]], str] | None = None):
        self.routes = routes
        self.supervisor = supervisor
        self.recorder = recorder
        self.request_timeout = request_timeout
        #: Set by the platform once identities are loaded; None serves without checks (unit tests).
        self.gatekeeper: Gatekeeper | None = None
        self.user_token = user_token

    async def __call__(self, scope, receive, send) -> None:
        request = _Request(
            request_id=(_header(scope, b"x-request-id") or b"").decode()[:128] or uuid.uuid4().hex,
            started=time.perf_counter(), start_ns=time.time_ns(),
        )
        id_header = [(b"x-request-id", request.request_id.encode())]
        try:
            if scope["method"] != "POST":
                raise AgentwharfError(f"{scope['method']} is not allowed here; use POST", "METHOD_NOT_ALLOWED")
            parts = scope["path"][len(PREFIX):].strip("/").split("/")
            media_error = _media_type_error(scope)
            request.body = await read_body(receive)
            self._resolve(parts, request)
            caller = scope.get("agentwharf.caller")
            meta_extra = self._authorize(scope, caller, request)
            if media_error is not None:
                raise media_error
            self.recorder.check_capacity()
            await self._forward(request, receive, send, id_header, meta_extra)
        except ConnectionAbortedError:
            return
        except AgentwharfError as error:
            await self._record_failure(request, error)
            headers = id_header + ([(b"retry-after", b"1")] if isinstance(error, Unavailable) else [])
            await send_error(send, error, headers)

    def _authorize(self, scope: dict, caller: Caller | None, request: _Request) -> dict:
        """CAN_QUERY on the endpoint, or 403. Returns what the worker gets besides the body:
        an on-behalf-of token when the chosen version's model asked for one."""
        if self.gatekeeper is None or caller is None:
            return {}
        request.caller = caller.name
        self.gatekeeper.require_endpoint(caller, request.endpoint.name, PermissionLevel.CAN_QUERY)
        presented = bearer_token(scope)
        request.secrets = (presented.encode(),) if presented else ()
        if system_token := request.endpoint.system_tokens.get(request.key):
            request.secrets += (system_token.encode(),)
        scopes = request.endpoint.user_scopes.get(request.key)
        if scopes is None or self.user_token is None or caller.via == "system":
            return {}
        token = self.user_token(caller, scopes)
        request.secrets += (token.encode(),)
        return {"user_token": token}

    def _resolve(self, parts: list[str], request: _Request) -> None:
        """Find the endpoint and worker key from the path (and, for the OpenAI route, ``model``)."""
        if parts == ["responses"] or parts == ["chat", "completions"]:
            request.route = "responses" if parts == ["responses"] else "chat"
            request.endpoint = self._endpoint(self._openai_model(request.body))
            request.key = self._pick(request.endpoint)
        elif len(parts) == 2 and parts[1] == "invocations":
            request.endpoint = self._endpoint(parts[0])
            request.key = self._pick(request.endpoint)
        elif len(parts) == 4 and parts[1] == "served-models" and parts[3] == "invocations":
            request.endpoint = self._endpoint(parts[0])
            request.key = request.endpoint.entities.get(parts[2])
            if request.key is None:
                raise NotFound(f"Served model {parts[2]!r} does not exist on endpoint {parts[0]!r}")
        else:
            raise NotFound(f"No such serving route: /serving-endpoints/{'/'.join(parts)}", "ENDPOINT_NOT_FOUND")

    @staticmethod
    def _openai_model(body: bytes) -> str:
        try:
            model = orjson.loads(body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            raise InvalidParameter("Request body must be a JSON object with 'model' and the messages") from None
        if not isinstance(model, str) or not model:
            raise InvalidParameter("'model' is required: the name of the serving endpoint to query")
        if model.startswith("apps/"):  # databricks-openai's way to reach an agent on Databricks Apps
            raise AgentwharfError(f"Not supported by agentwharf: Databricks Apps ({model!r}); deploy the agent "
                                  "as a serving endpoint and use its name as the model", "NOT_IMPLEMENTED")
        return model

    @staticmethod
    def _pick(endpoint: EndpointRoutes) -> str:
        key = endpoint.pick()
        if key is None:
            raise Unavailable(f"Endpoint {endpoint.name!r} has no served version with traffic yet")
        return key

    def _endpoint(self, name: str) -> EndpointRoutes:
        endpoint = self.routes.get(name)
        if endpoint is None:
            raise NotFound(f"Endpoint {name!r} does not exist")
        return endpoint

    def _record_header(self, request: _Request, status: int) -> dict:
        endpoint = request.endpoint
        return record_header(
            request_id=request.request_id, endpoint=endpoint.name, experiment_id=endpoint.experiment_id,
            entity=request.key.partition("/")[2] if request.key else None,
            model=endpoint.models.get(request.key) if request.key else None,
            status_code=status, started=request.started, caller=request.caller, route=request.route, stream=request.stream,
        )

    @staticmethod
    def _redacted(request: _Request, record: bytes) -> bytes:
        # Nothing on the request path copies headers into a record, but a model may echo what
        # it was given (its on-behalf-of token, say) into its output or spans.
        for secret in request.secrets:
            if secret in record:
                record = record.replace(secret, b"[REDACTED]")
        return record

    @staticmethod
    def _gateway_record(request: _Request, error: str) -> bytes:
        return Recorder.gateway_record(request.endpoint.name, request.body, error, request.start_ns)

    async def _record_failure(self, request: _Request, error: AgentwharfError, record: bytes | None = None) -> None:
        # A request that never reached a known endpoint has no experiment to be traced in; one
        # refused because the spool is full must not add to it (it is counted in /metrics); a
        # refused caller must not be able to fill someone else's trace table.
        if request.endpoint is None or isinstance(error, (SpoolFull, PermissionDenied)):
            return
        if record is None:
            record = self._gateway_record(request, error.message)
        await self.recorder.record(self._record_header(request, error.http_status), self._redacted(request, record))

    async def _forward(self, request: _Request, receive, send, id_header: list, meta_extra: dict) -> None:
        connection = await self.supervisor.acquire(request.key)
        meta = {"route": request.route, "endpoint": request.endpoint.name, "entity": request.key.partition("/")[2],
                "request_id": request.request_id, "model": request.endpoint.name, **meta_extra}
        connection.in_flight += 1
        try:
            try:
                reply = await connection.request(meta, request.body, self.request_timeout)
            except WorkerGone:
                raise Unavailable(f"The worker for {request.key} stopped before answering; retry shortly") from None
            except asyncio.TimeoutError:
                raise AgentwharfError(f"The model did not answer within {self.request_timeout:.0f}s", "REQUEST_TIMEOUT") from None
            if not reply.stream:
                # Durable before acknowledged: the answer leaves only once its record is on disk.
                record = reply.record or self._gateway_record(request, "the worker sent no record")
                await self.recorder.record(self._record_header(request, reply.status), self._redacted(request, record))
                await send_json(send, reply.status, reply.body, id_header)
                return
            request.stream = True
            await self._stream(request, connection, reply, receive, send, id_header)
        finally:
            connection.in_flight -= 1

    async def _stream(self, request: _Request, connection: WorkerConnection, reply: Reply, receive, send, id_header: list) -> None:
        """Relay events as server-sent events. If the client leaves, tell the worker to stop,
        but keep reading until its record arrives so the request is still recorded."""
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            connection.cancel(reply.stream_id)

        watcher = asyncio.create_task(watch_disconnect(), name="sse-disconnect-watch")
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + id_header})
        try:
            async for event, error in reply.events():
                if event:
                    if not gone.is_set():
                        with contextlib.suppress(OSError):
                            await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
                    continue
                status = 499 if gone.is_set() else (500 if error else 200)
                record = reply.record or self._gateway_record(request, (error or b"stream lost").decode())
                await self.recorder.record(self._record_header(request, status), self._redacted(request, record))
                if not gone.is_set():
                    tail = (b"data: " + error + b"\n\n" if error else b"") + _DONE
                    await send({"type": "http.response.body", "body": tail, "more_body": False})
        finally:
            watcher.cancel()
