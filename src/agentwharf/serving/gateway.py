"""The serving gateway: a bare ASGI app for ``/serving-endpoints/...``.

Routes:
    POST /serving-endpoints/{name}/invocations                          traffic split
    POST /serving-endpoints/{name}/served-models/{entity}/invocations   one version
    POST /serving-endpoints/responses                                   OpenAI Responses API
    POST /serving-endpoints/chat/completions                            OpenAI Chat Completions API
    POST /serving-endpoints/completions, /serving-endpoints/embeddings  OpenAI's, LLM endpoints only

It is plain ASGI rather than a FastAPI router because it sits on the hot path: it forwards the
raw body to a worker without parsing it (the worker validates it anyway), and only the OpenAI
route reads the JSON, to find ``model``. An LLM endpoint (external models) has no worker: the
gateway makes its calls itself with MLflow's AI Gateway (``agentwharf.llm``), and also answers
MLflow's own gateway routes (``/gateway/...``) for it, so MLflow's Playground and ``gateway:/``
judges go through the same authorization, limits and records. Rate limits of every endpoint
are checked here, after authorization and before any work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from agentwharf.asgi import SSE_DONE, SSE_HEADERS, header, read_body, send_error, send_json
from agentwharf.auth import tokens
from agentwharf.auth.caller import Caller
from agentwharf.auth.gatekeeper import Gatekeeper, bearer_token
from agentwharf.auth.levels import PermissionLevel
from agentwharf.errors import (
    AgentwharfError,
    DeadlineExceeded,
    DeploymentFailed,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    NotImplementedByPlatform,
    PayloadTooLarge,
    PermissionDenied,
    RouteNotFound,
    Unavailable,
    UnsupportedMediaType,
)
from agentwharf.llm.calls import LlmCalls
from agentwharf.llm.limits import RateLimiter
from agentwharf.llm.runtime import LlmRuntime
from agentwharf.serving.llm_serving import PREFIX, LlmServing
from agentwharf.serving.routing import EndpointRoutes, RouteTable
from agentwharf.serving.shadow import LiveRequest, ShadowTraffic
from agentwharf.serving.supervisor import Supervisor
from agentwharf.serving.worker_client import Reply, WorkerConnection, WorkerGone
from agentwharf.tracing.ids import new_request_id
from agentwharf.tracing.recorder import Recorder, SpoolFull
from agentwharf.tracing.recorder import header as record_header

log = logging.getLogger("agentwharf.gateway")

_SSE_HEADERS = SSE_HEADERS
_DONE = SSE_DONE
_OPENAI_ROUTES = {("responses",): "responses", ("chat", "completions"): "chat", ("completions",): "completions",
                  ("embeddings",): "embeddings"}
#: The most of a client's own request id that is kept.
CLIENT_ID_CHARS = 128


def _media_type_error(scope: dict) -> UnsupportedMediaType | None:
    content_type = header(scope, b"content-type")
    if content_type is None:
        return None
    media = content_type.split(b";", 1)[0].strip().lower()
    if media not in (b"application/json", b"") and not media.endswith(b"+json"):
        return UnsupportedMediaType(f"Content-Type must be application/json, got {content_type.decode(errors='replace')!r}")
    return None


def client_request_id(scope: dict) -> str | None:
    """The caller's own ``x-request-id``, kept beside the platform's id (never instead of it:
    callers may reuse ids, and one caller must not be able to collide with another's)."""
    raw = header(scope, b"x-request-id")
    if not raw:
        return None
    return _kept_client_id(raw.decode("latin-1"))


def body_client_request_id(body: bytes) -> str | None:
    """``client_request_id`` in the body, where databricks-sdk's ``query(client_request_id=...)``
    puts it. Only a body that mentions it is parsed, so other requests pay one substring scan."""
    if b'"client_request_id"' not in body:
        return None
    try:
        value = orjson.loads(body).get("client_request_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None  # the worker reports a malformed body
    return _kept_client_id(value) if isinstance(value, str) and value else None


def _kept_client_id(value: str) -> str:
    value = value[:CLIENT_ID_CHARS]
    # Someone will send a token here by mistake; it must not reach the spool, trace or row.
    if any(prefix in value for prefix in (tokens.PAT_PREFIX, *tokens.SIGNED_PREFIXES)):
        return "[REDACTED]"
    return value


@dataclass(slots=True)
class _Request:
    """What the gateway learned about one request so far, for its record."""

    #: The platform's own id: always generated here, so always unique.
    request_id: str
    client_request_id: str | None
    started: float
    start_ns: int
    body: bytes = b""
    #: What the record keeps in place of a body that was not read (one over the size limit).
    body_note: str | None = None
    endpoint: EndpointRoutes | None = None
    key: str | None = None
    route: str = "invocations"
    stream: bool = False
    caller: str | None = None
    caller_kind: str | None = None
    #: Tokens that must never be stored: the caller's own and any minted for this request
    #: (and an LLM endpoint's provider keys).
    secrets: tuple[bytes, ...] = ()
    #: The response has started: an error now cannot change its status.
    answering: bool = False
    #: Tokens an LLM call used, for its rate limits.
    usage_total: int = 0
    #: The traffic split chose the version (not the path): such a request may be shadowed.
    split: bool = False

    def id_headers(self) -> list[tuple[bytes, bytes]]:
        """``x-request-id`` echoes the caller's own id when it sent one (so it can match its
        logs); ``x-agentwharf-request-id`` is always the platform's."""
        own = self.request_id.encode()
        echoed = self.client_request_id.encode("latin-1") if self.client_request_id else own
        return [(b"x-request-id", echoed), (b"x-agentwharf-request-id", own)]

    def answer_headers(self) -> list[tuple[bytes, bytes]]:
        """An answer's headers: the ids, and which served entity answered (Databricks'
        ``served-model-name``, which databricks-sdk's ``query`` reads)."""
        entity = self.key.partition("/")[2] if self.key else ""
        return [*self.id_headers(), (b"served-model-name", entity.encode())] if entity else self.id_headers()


class Gateway(LlmServing):
    def __init__(self, routes: RouteTable, supervisor: Supervisor, recorder: Recorder, request_timeout: float,
                 user_token: Callable[[Caller, tuple[str, ...]], str] | None = None, *,
                 max_request_bytes: int = 16 * 1024 * 1024, body_timeout: float = 60.0, start_wait: float = 300.0):
        self.routes = routes
        self.supervisor = supervisor
        self.recorder = recorder
        self.request_timeout = request_timeout
        self.max_request_bytes = max_request_bytes
        self.body_timeout = body_timeout
        #: How long a request to an endpoint whose first version is still loading waits.
        self.start_wait = start_wait
        #: Set by the platform once identities are loaded; None serves without checks (unit tests).
        self.gatekeeper: Gatekeeper | None = None
        self.user_token = user_token
        #: Where request counts, latencies and in-flight requests go (``platform.metrics``).
        self.metrics = None
        self.limiter = RateLimiter()
        #: Set by the platform: MLflow's AI Gateway in this process, for LLM endpoints.
        self.llm_runtime: LlmRuntime | None = None
        self.llm_calls = LlmCalls(request_timeout)
        self.max_field_chars = 1024 * 1024
        #: Copies of live requests to shadow rollouts' candidates (targets set by the rollouts).
        self.shadows = ShadowTraffic(supervisor, recorder, request_timeout)
        #: Requests in progress here: one alone has its record synced without a thread hop.
        self.active = 0

    async def __call__(self, scope, receive, send) -> None:
        request = _Request(request_id=scope.get("agentwharf.request_id") or new_request_id(),
                           client_request_id=client_request_id(scope),
                           started=time.perf_counter(), start_ns=time.time_ns())

        async def tracked_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                request.answering = True
            await send(message)

        self.active += 1
        try:
            await self._serve(scope, receive, tracked_send, request)
        except ConnectionAbortedError:
            return
        except AgentwharfError as error:
            await self._refuse(request, error, tracked_send)
        except Exception:
            # A bug of the platform's: the caller still gets JSON (and the request a record).
            log.exception("request %s failed in the gateway", request.request_id)
            await self._refuse(request, AgentwharfError(f"Internal error in the serving gateway (request {request.request_id}); "
                                                        "see the platform log"), tracked_send)
        finally:
            self.active -= 1

    async def _serve(self, scope, receive, send, request: _Request) -> None:
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['method']} is not allowed here; use POST")
        parts = tuple(scope["path"][len(PREFIX):].strip("/").split("/"))
        media_error = _media_type_error(scope)
        caller = scope.get("agentwharf.caller")
        openai_route = _OPENAI_ROUTES.get(parts)
        if openai_route is None:
            # The endpoint is known from the path: authorize before reading the body, so a
            # refused caller costs nothing and an oversized body is refused on the record.
            request.endpoint = self._endpoint(self._endpoint_in_path(parts))
            self._authorize(caller, request)
            await self._read_body(scope, receive, request)
            if request.endpoint.llm is not None:
                if len(parts) == 4:
                    raise InvalidParameter(f"LLM endpoint {parts[0]!r} routes each call by its traffic split and fallbacks; "
                                           f"query /serving-endpoints/{parts[0]}/invocations")
                await self._serve_llm(scope, receive, send, request, media_error)
                return
            request.key = await self._key_in_path(parts, request.endpoint, request)
        else:
            await self._read_body(scope, receive, request)
            request.route = openai_route
            request.endpoint = self._endpoint(self._openai_model(request.body))
            self._authorize(caller, request)
            if request.endpoint.llm is not None:
                await self._serve_llm(scope, receive, send, request, media_error)
                return
            if openai_route in ("completions", "embeddings"):
                raise InvalidParameter(f"Endpoint {request.endpoint.name!r} serves an agent; /serving-endpoints/{openai_route} "
                                       "is for LLM endpoints. Use /serving-endpoints/responses or chat/completions")
            request.key = await self._pick(request.endpoint)
            request.split = True
        if media_error is not None:
            raise media_error
        if request.client_request_id is None:
            request.client_request_id = body_client_request_id(request.body)
        self.recorder.check_capacity()
        ticket = await self._admit(request)
        try:
            await self._forward(request, receive, send, self._credentials(scope, caller, request))
        finally:
            if ticket is not None:
                ticket.settle(0)

    async def _read_body(self, scope, receive, request: _Request) -> None:
        try:
            request.body = await read_body(scope, receive, self.max_request_bytes, self.body_timeout)
        except PayloadTooLarge:
            request.body_note = f"[request body over the {self.max_request_bytes}-byte limit; not read]"
            raise

    async def _refuse(self, request: _Request, error: AgentwharfError, send) -> None:
        """Record a refused request (when it has an endpoint to be recorded in) and answer."""
        try:
            await self._record_failure(request, error)
        except AgentwharfError as failure:  # the spool cannot take the record (disk full)
            error = failure
        self._observe(request, error.http_status)
        if request.answering:
            log.error("request %s failed after its answer started: %s", request.request_id, error.message)
            return
        await send_error(send, error, request.id_headers())

    def _authorize(self, caller: Caller | None, request: _Request) -> None:
        """CAN_QUERY on the endpoint, or 403."""
        if caller is not None:
            request.caller, request.caller_kind = caller.name, caller.kind
        if self.gatekeeper is not None and caller is not None:
            if caller.via == "monitor" and request.endpoint.llm is None:
                raise PermissionDenied("Online scoring's credential may only call LLM endpoints (its judges)")
            self.gatekeeper.require_endpoint(caller, request.endpoint.name, PermissionLevel.CAN_QUERY)

    def _credentials(self, scope: dict, caller: Caller | None, request: _Request) -> dict:
        """What the worker gets besides the body: an on-behalf-of token when the chosen
        version's model asked for one. Notes every token the record must not keep."""
        if self.gatekeeper is None or caller is None:
            return {}
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

    @staticmethod
    def _endpoint_in_path(parts: tuple[str, ...]) -> str:
        if (len(parts) == 2 and parts[1] == "invocations") or (len(parts) == 4 and parts[1] == "served-models"
                                                                and parts[3] == "invocations"):
            return parts[0]
        raise RouteNotFound(f"No such serving route: /serving-endpoints/{'/'.join(parts)}")

    async def _key_in_path(self, parts: tuple[str, ...], endpoint: EndpointRoutes, request: _Request) -> str:
        """The traffic split's pick, or the one served entity the path names."""
        if len(parts) == 2:
            request.split = True
            return await self._pick(endpoint)
        key = endpoint.entities.get(parts[2])
        if key is None:
            raise NotFound(f"Served model {parts[2]!r} does not exist on endpoint {parts[0]!r}")
        return key

    @staticmethod
    def _openai_model(body: bytes) -> str:
        try:
            model = orjson.loads(body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            raise InvalidParameter("Request body must be a JSON object with 'model' and the messages") from None
        if not isinstance(model, str) or not model:
            raise InvalidParameter("'model' is required: the name of the serving endpoint to query")
        if model.startswith("apps/"):  # databricks-openai's way to reach an agent on Databricks Apps
            raise NotImplementedByPlatform(f"Not supported by agentwharf: Databricks Apps ({model!r}); deploy the "
                                           "agent as a serving endpoint and use its name as the model")
        return model

    async def _pick(self, endpoint: EndpointRoutes) -> str:
        """A worker key by the traffic split. An endpoint whose first version is still loading
        is waited for (as a cold start is); one whose update failed refuses at once."""
        deadline = time.monotonic() + self.start_wait
        while (key := endpoint.pick()) is None:
            if endpoint.update_failed:
                raise DeploymentFailed(f"Endpoint {endpoint.name!r} serves no version: its last config update failed "
                                       "(UPDATE_FAILED). Users with CAN_MANAGE on it see why in its state.")
            remaining = deadline - time.monotonic()
            if not endpoint.updating or remaining <= 0:
                raise Unavailable(f"Endpoint {endpoint.name!r} has no served version with traffic yet")
            await self.routes.wait_changed(min(remaining, 1.0))
            endpoint = self._endpoint(endpoint.name)
        return key

    def _endpoint(self, name: str) -> EndpointRoutes:
        endpoint = self.routes.get(name)
        if endpoint is None:
            raise NotFound(f"Endpoint {name!r} does not exist")
        return endpoint

    def _record_header(self, request: _Request, status: int) -> dict:
        endpoint = request.endpoint
        return record_header(
            request_id=request.request_id, client_request_id=request.client_request_id,
            endpoint=endpoint.name, experiment_id=endpoint.experiment_id,
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
        body = request.body_note.encode() if request.body_note is not None else request.body
        return Recorder.gateway_record(request.endpoint.name, body, error, request.start_ns)

    async def _record_failure(self, request: _Request, error: AgentwharfError, record: bytes | None = None) -> None:
        # A request that never reached a known endpoint has no experiment to be traced in; one
        # refused because the spool is full must not add to it (it is counted in /metrics); a
        # refused caller must not be able to fill someone else's trace table.
        if request.endpoint is None or isinstance(error, (SpoolFull, PermissionDenied)):
            return
        if record is None:
            record = self._gateway_record(request, error.message)
        await self.recorder.record(self._record_header(request, error.http_status), self._redacted(request, record))

    def _observe(self, request: _Request, status: int) -> None:
        if self.metrics is not None and request.endpoint is not None:
            self.metrics.observe_request(request.endpoint.name, request.key and request.key.partition("/")[2], status,
                                         time.perf_counter() - request.started)

    async def _forward(self, request: _Request, receive, send, meta_extra: dict) -> None:
        connection = await self.supervisor.acquire(request.key)
        entity = request.key.partition("/")[2]
        meta = {"route": request.route, "endpoint": request.endpoint.name, "entity": entity,
                "request_id": request.request_id, "model": request.endpoint.name, **meta_extra}
        in_flight = self.metrics.in_flight_of(request.endpoint.name, entity) if self.metrics is not None else None
        connection.in_flight += 1
        if in_flight is not None:
            in_flight.inc()
        try:
            try:
                reply = await connection.request(meta, request.body, self.request_timeout)
            except WorkerGone:
                raise Unavailable(f"The worker for {request.key} stopped before answering; retry shortly") from None
            except asyncio.TimeoutError:
                raise DeadlineExceeded(f"The model did not answer within {self.request_timeout:.0f}s") from None
            if not reply.stream:
                # Durable before acknowledged: the answer leaves only once its record is on disk.
                record = reply.record or self._gateway_record(request, "the worker sent no record")
                await self.recorder.record(self._record_header(request, reply.status), self._redacted(request, record),
                                           alone=self.active == 1)
                await send_json(send, reply.status, reply.body, request.answer_headers())
                self._observe(request, reply.status)
                self._shadow(request, reply.record)
                return
            request.stream = True
            await self._stream(request, connection, reply, receive, send)
        finally:
            connection.in_flight -= 1
            if in_flight is not None:
                in_flight.dec()

    def _shadow(self, request: _Request, record: bytes | None) -> None:
        """Offer an answered request to the endpoint's shadow rollout, if it has one. Called
        once the answer has gone out; the copy runs as a task of its own."""
        if request.split and request.endpoint.name in self.shadows.targets:
            self.shadows.offer(LiveRequest(request.endpoint, request.key, request.body, request.route, request.caller,
                                           request.client_request_id, request.secrets), record)

    async def _stream(self, request: _Request, connection: WorkerConnection, reply: Reply, receive, send) -> None:
        """Relay events as server-sent events. If the client leaves, tell the worker to stop,
        but keep reading until its record arrives so the request is still recorded."""
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            connection.cancel(reply.stream_id)

        watcher = asyncio.create_task(watch_disconnect(), name="sse-disconnect-watch")
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS + request.answer_headers()})
        first = True
        try:
            async for events, ended, error in reply.event_batches():
                if events:
                    if first and self.metrics is not None:
                        first = False
                        self.metrics.observe_first_event(request.endpoint.name, request.key.partition("/")[2],
                                                         time.perf_counter() - request.started)
                    if not gone.is_set():
                        body = b"".join(b"data: " + event + b"\n\n" for event in events)
                        with contextlib.suppress(OSError):
                            await send({"type": "http.response.body", "body": body, "more_body": True})
                if not ended:
                    continue
                status = 499 if gone.is_set() else (500 if error else 200)
                record = reply.record or self._gateway_record(request, (error or b"stream lost").decode())
                try:
                    await self.recorder.record(self._record_header(request, status), self._redacted(request, record))
                except AgentwharfError as failure:
                    # Unrecorded means unacknowledged: the stream ends with the error, no [DONE].
                    error, tail = failure.error_body(), b""
                else:
                    tail = _DONE
                self._observe(request, status)
                if not gone.is_set():
                    tail = (b"data: " + error + b"\n\n" if error else b"") + tail
                    await send({"type": "http.response.body", "body": tail, "more_body": False})
                self._shadow(request, reply.record)
        finally:
            watcher.cancel()
