"""The serving gateway's path for LLM endpoints (a part of ``Gateway``, kept apart by concern).

An LLM endpoint has no worker: the gateway makes its calls itself with MLflow's AI Gateway
(``agentwharf.llm``), after the same authorization as any endpoint and the endpoint's rate
limits, and records each call (with its token usage) before answering, like an agent's request.
It also answers MLflow's own gateway routes (``/gateway/...``) for the platform's LLM endpoints,
so MLflow's Playground and ``gateway:/`` judges go through the same path; anything else there is
MLflow's server's to answer.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from agentwharf.asgi import SSE_DONE, SSE_HEADERS, read_body, send_error, send_json
from agentwharf.auth.gatekeeper import bearer_token
from agentwharf.errors import AgentwharfError, BadGateway, NotFound, NotImplementedByPlatform, Unavailable
from agentwharf.llm import calls as llm_calls
from agentwharf.llm.calls import LlmStream, Outcome
from agentwharf.llm.limits import Ticket
from agentwharf.llm.runtime import LoadedEndpoint
from agentwharf.llm.usage import estimate_tokens, max_tokens, prompt_text

#: Where the gateway's routes live.
PREFIX = "/serving-endpoints/"
#: MLflow's own AI Gateway routes the platform answers for its LLM endpoints (the rest, and
#: endpoints made in MLflow alone, go to MLflow's server): path -> route; the endpoint is the
#: body's ``model``, or in the path for ``/gateway/{name}/mlflow/invocations``.
MLFLOW_GATEWAY_PREFIX = "/gateway/"
_MLFLOW_ROUTES = {"/gateway/mlflow/v1/chat/completions": "chat/completions",
                  "/gateway/openai/v1/chat/completions": "chat/completions",
                  "/gateway/openai/v1/embeddings": "embeddings", "/gateway/openai/v1/responses": "responses"}


def _replay(body: bytes, receive):
    """A ``receive`` that hands over a body already read, then whatever the client sends next."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class LlmServing:
    """``Gateway``'s LLM methods. They use what ``Gateway`` holds (routes, recorder, limiter,
    llm_runtime, llm_calls, limits of bodies) and its request bookkeeping (``_Request``,
    ``_record_header``, ``_redacted``)."""

    async def serve_mlflow_route(self, scope, receive, send, mlflow) -> None:
        """MLflow's own gateway routes (``/gateway/...``): answered here for the platform's
        LLM endpoints, passed to MLflow's server (``mlflow``, with the body as read) for anything
        else."""
        path = scope["path"]
        route = _MLFLOW_ROUTES.get(path)
        parts = path[len(MLFLOW_GATEWAY_PREFIX):].strip("/").split("/")
        by_path = len(parts) == 3 and parts[1:] == ["mlflow", "invocations"]
        if scope["method"] != "POST" or (route is None and not by_path):
            await mlflow(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_request_bytes, self.body_timeout)
        except AgentwharfError as error:
            await send_error(send, error)
            return
        try:
            name = parts[0] if by_path else orjson.loads(body).get("model")
        except (orjson.JSONDecodeError, AttributeError):
            name = None
        endpoint = self.routes.get(name) if isinstance(name, str) else None
        if endpoint is None or endpoint.llm is None:
            await mlflow(scope, _replay(body, receive), send)
            return
        scope = {**scope, "path": f"{PREFIX}{name}/invocations" if by_path else f"{PREFIX}{route}"}
        await self(scope, _replay(body, receive), send)

    async def _admit(self, request, prompt_tokens: int = 0, bound: int | None = None) -> Ticket | None:
        """The endpoint's rate limits for this caller (429 when spent; see ``llm.limits``)."""
        limits = request.endpoint.limits
        if not limits:
            return None
        return await self.limiter.admit(request.endpoint.name, limits, request.caller, request.caller_kind,
                                        prompt_tokens, bound)

    async def _serve_llm(self, scope, receive, send, request, media_error) -> None:
        """An LLM endpoint's call, made here with MLflow's AI Gateway; recorded like any other."""
        endpoint = request.endpoint
        kind = llm_calls.call_kind(endpoint.name, endpoint.llm.task, request.route)
        if media_error is not None:
            raise media_error
        body = llm_calls.parse_request(request.body, kind)
        request.stream = bool(body.get("stream"))
        if presented := bearer_token(scope):
            request.secrets += (presented.encode(),)
        self.recorder.check_capacity()
        if self.llm_runtime is None:
            raise Unavailable("The platform's LLM gateway is not running")
        # The prompt's estimate is for token limits only; most endpoints have no limits at all.
        ticket = await self._admit(request, estimate_tokens(prompt_text(body)), max_tokens(body)) if endpoint.limits else None
        try:
            try:
                loaded = await self.llm_runtime.get(endpoint.name)
            except NotFound:
                raise BadGateway(f"LLM endpoint {endpoint.name!r} has no endpoint in MLflow's AI Gateway (deleted there?); "
                                 "update its config to create it again") from None
            except AgentwharfError:
                raise
            except Exception as error:  # MLflow could not resolve it: a model or secret gone, a key it cannot decrypt
                raise BadGateway(f"LLM endpoint {endpoint.name!r} cannot be loaded from MLflow's AI Gateway: "
                                 f"{type(error).__name__}: {str(error)[:300]}") from None
            request.secrets += loaded.secrets
            if loaded.guardrails:
                raise NotImplementedByPlatform(f"LLM endpoint {endpoint.name!r} has guardrails attached in MLflow's AI Gateway "
                                               f"({', '.join(loaded.guardrails)}), which agentwharf does not run yet; its calls "
                                               "are refused rather than served unguarded. Remove them there to serve it")
            result = await self.llm_calls.call(loaded, kind, body, request.start_ns)
            if isinstance(result, Outcome):
                await self._answer_llm(request, result, loaded, send)
            else:
                await self._stream_llm(request, result, loaded, receive, send)
        finally:
            if ticket is not None:
                ticket.settle(request.usage_total)

    def _llm_record(self, request, outcome: Outcome, loaded: LoadedEndpoint) -> bytes:
        return llm_calls.record(outcome, endpoint=request.endpoint.name, route=request.route, loaded=loaded,
                                caller=request.caller, max_field_chars=self.max_field_chars)

    def _llm_header(self, request, status: int, outcome: Outcome) -> dict:
        header = self._record_header(request, status)
        header["entity"] = request.endpoint.llm.entity_of(outcome.model)
        header["model_name"] = outcome.model
        return header

    async def _answer_llm(self, request, outcome: Outcome, loaded: LoadedEndpoint, send) -> None:
        request.usage_total = outcome.usage.total if outcome.usage else 0
        body = self._redacted(request, orjson.dumps(outcome.answer))
        # Durable before acknowledged, as for agents.
        await self.recorder.record(self._llm_header(request, 200, outcome),
                                   self._redacted(request, self._llm_record(request, outcome, loaded)), alone=self.active == 1)
        await send_json(send, 200, body, request.id_headers())
        self._observe(request, 200)

    async def _stream_llm(self, request, stream: LlmStream, loaded: LoadedEndpoint, receive, send) -> None:
        """Relay the provider's stream; record the call once it ends, then send ``[DONE]``."""
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch_disconnect(), name="llm-sse-disconnect-watch")
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + request.id_headers()})
        try:
            events = stream.events()
            async for block in events:
                if gone.is_set():
                    break  # the caller left: stop reading the provider, record what came
                with contextlib.suppress(OSError):
                    await send({"type": "http.response.body", "body": self._redacted(request, block), "more_body": True})
            await events.aclose()
            stream.finish()
            outcome = stream.outcome
            request.usage_total = outcome.usage.total if outcome.usage else 0
            error = outcome.failure.error_body() if outcome.failure else None
            status = 499 if gone.is_set() else (outcome.failure.http_status if outcome.failure else 200)
            try:
                await self.recorder.record(self._llm_header(request, status, outcome),
                                           self._redacted(request, self._llm_record(request, outcome, loaded)))
            except AgentwharfError as failure:
                error, tail = failure.error_body(), b""
            else:
                tail = SSE_DONE
            self._observe(request, status)
            if not gone.is_set():
                tail = (b"data: " + error + b"\n\n" if error else b"") + tail
                await send({"type": "http.response.body", "body": self._redacted(request, tail), "more_body": False})
        finally:
            watcher.cancel()

