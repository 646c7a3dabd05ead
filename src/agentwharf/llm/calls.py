"""One call to an LLM endpoint: check its shape, make it with MLflow's provider, and give the
gateway the answer (or the stream), its token usage and its record.

Chat, embeddings and Responses calls go through MLflow's OpenAI passthrough: the request
reaches the provider as the caller wrote it (tools, ``response_format``, sampling options), with
``model`` swapped for the provider's model, and the answer comes back as the provider wrote it
(tool calls included). Completions go through MLflow's typed completions call, which has no
passthrough (and cannot stream: MLflow 3.17 reads completion chunks as chat deltas). A streamed chat asks the provider for usage in its last chunk
(``stream_options.include_usage``) when the caller did not; that extra chunk is kept from the
caller, who gets exactly the stream it asked for.

A provider that cannot be reached, or fails, is 502 ``BAD_GATEWAY``; one that does not answer in
time 504 ``DEADLINE_EXCEEDED`` (for a stream: its first chunk, then each next one); one that
refuses the request as malformed 400, with its reason. No message ever carries a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentwharf.errors import (
    AgentwharfError,
    BadGateway,
    DeadlineExceeded,
    InvalidParameter,
    RequestLimitExceeded,
)
from agentwharf.llm import usage as token_usage
from agentwharf.llm.runtime import LoadedEndpoint
from agentwharf.llm.spec import CHAT, COMPLETIONS, EMBEDDINGS
from agentwharf.llm.usage import Usage
from agentwharf.tracing import record as trace_record

log = logging.getLogger("agentwharf.llm.calls")

#: For each task, the route a request came in on -> the kind of call it is.
_KINDS = {
    CHAT: {"invocations": "chat", "chat": "chat", "responses": "responses"},
    COMPLETIONS: {"invocations": "completions", "completions": "completions"},
    EMBEDDINGS: {"invocations": "embeddings", "embeddings": "embeddings"},
}
_ROUTE_PATHS = {"chat": "/serving-endpoints/chat/completions", "responses": "/serving-endpoints/responses",
                "completions": "/serving-endpoints/completions", "embeddings": "/serving-endpoints/embeddings"}
#: The field each kind of call must have.
_REQUIRED = {"chat": "messages", "completions": "prompt", "embeddings": "input", "responses": "input"}
_TASK_OF_KIND = {"chat": CHAT, "responses": CHAT, "completions": COMPLETIONS, "embeddings": EMBEDDINGS}


def call_kind(endpoint: str, task: str, route: str) -> str:
    """What a request on ``route`` to an endpoint of ``task`` is, or 400 naming the routes
    that fit."""
    kind = _KINDS.get(task, {}).get(route)
    if kind is None:
        fits = ", ".join(f"POST {_ROUTE_PATHS.get(r, f'/serving-endpoints/{endpoint}/invocations')}" for r in _KINDS.get(task, {}))
        raise InvalidParameter(f"Endpoint {endpoint!r} serves {task}; this route does not. Use {fits}")
    return kind


def parse_request(body: bytes, kind: str) -> dict[str, Any]:
    """The request as a JSON object with the field its kind needs, ``model`` removed."""
    try:
        request = orjson.loads(body) if body.strip() else None
    except orjson.JSONDecodeError as error:
        raise InvalidParameter(f"Malformed JSON in request body: {error}") from None
    if not isinstance(request, dict):
        raise InvalidParameter("Request body must be a JSON object")
    required = _REQUIRED[kind]
    value = request.get(required)
    if value is None or value == [] or value == "":
        raise InvalidParameter(f"'{required}' is required for a {kind} call")
    if kind == "chat" and not (isinstance(value, list) and all(isinstance(m, dict) for m in value)):
        raise InvalidParameter("'messages' must be a list of message objects ({\"role\": ..., \"content\": ...})")
    stream = request.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidParameter("'stream' must be true or false")
    if stream and kind == "embeddings":
        raise InvalidParameter("Embeddings are not streamed; leave 'stream' out")
    if stream and kind == "completions":
        # MLflow 3.17's AI Gateway reads completion chunks as chat deltas and fails on every
        # OpenAI-compatible server's stream; refusing beats a stream that breaks at its first chunk.
        raise InvalidParameter("Streaming is not supported for llm/v1/completions (MLflow 3.17's AI Gateway cannot read "
                               "completion chunks); send stream=false, or use a llm/v1/chat endpoint to stream")
    request.pop("model", None)
    return request


def _status_and_detail(error: BaseException) -> tuple[int | None, str]:
    status = getattr(error, "status_code", None)
    detail = getattr(error, "detail", None)
    return status, str(detail if detail is not None else error)


def provider_error(error: BaseException, endpoint: str, secrets: tuple[bytes, ...]) -> AgentwharfError:
    """The error of the tree for what the provider (through MLflow's gateway) raised."""
    if isinstance(error, AgentwharfError):
        return error
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return DeadlineExceeded(f"The provider of LLM endpoint {endpoint!r} did not answer in time")
    status, detail = _status_and_detail(error)
    for secret in secrets:
        detail = detail.replace(secret.decode(errors="replace"), "[REDACTED]")
    detail = detail[:1000]
    if status is None:
        # aiohttp's connection errors, a provider closing mid-answer, MLflow's own errors.
        return BadGateway(f"The provider of LLM endpoint {endpoint!r} could not be reached: {type(error).__name__}: {detail}")
    if status == 429:
        return RequestLimitExceeded(f"The provider of LLM endpoint {endpoint!r} is rate limiting: {detail}", retry_after=1.0)
    if status in (408, 504):
        return DeadlineExceeded(f"The provider of LLM endpoint {endpoint!r} timed out: {detail}")
    if status in (401, 403):
        return BadGateway(f"The provider of LLM endpoint {endpoint!r} refused the endpoint's credentials ({status}): {detail}")
    if 400 <= status < 500:
        return InvalidParameter(f"The provider of LLM endpoint {endpoint!r} refused the request ({status}): {detail}")
    return BadGateway(f"The provider of LLM endpoint {endpoint!r} failed ({status}): {detail}")


@dataclass
class Outcome:
    """What the record and the row need of a call, whatever way it went."""

    kind: str
    request: dict[str, Any]
    answer: Any = None
    usage: Usage | None = None
    model: str | None = None
    error: str | None = None
    #: What a stream that failed midway failed with (its status goes in the record).
    failure: AgentwharfError | None = None
    start_ns: int = 0


class _ChatAssembler:
    """A streamed chat's chunks joined into the chat completion they add up to."""

    def __init__(self) -> None:
        self.choices: dict[int, dict] = {}
        self.head: dict[str, Any] = {}
        self.usage: dict | None = None

    def feed(self, chunk: dict) -> None:
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "created", "model")}
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            state = self.choices.setdefault(choice.get("index", 0), {"role": "assistant", "content": [], "tools": {},
                                                                     "finish_reason": None})
            delta = choice.get("delta") or {}
            if delta.get("content"):
                state["content"].append(delta["content"])
            for call in delta.get("tool_calls") or []:
                tool = state["tools"].setdefault(call.get("index", 0), {"id": None, "type": "function",
                                                                        "function": {"name": "", "arguments": ""}})
                tool["id"] = call.get("id") or tool["id"]
                function = call.get("function") or {}
                tool["function"]["name"] += function.get("name") or ""
                tool["function"]["arguments"] += function.get("arguments") or ""
            state["finish_reason"] = choice.get("finish_reason") or state["finish_reason"]

    def result(self) -> dict[str, Any]:
        choices = []
        for index, state in sorted(self.choices.items()):
            message: dict[str, Any] = {"role": state["role"], "content": "".join(state["content"]) or None}
            if state["tools"]:
                message["tool_calls"] = [state["tools"][i] for i in sorted(state["tools"])]
            choices.append({"index": index, "message": message, "finish_reason": state["finish_reason"]})
        answer = {**self.head, "object": "chat.completion", "choices": choices}
        if self.usage:
            answer["usage"] = self.usage
        return answer


class _ResponsesAssembler:
    """A streamed Responses call: the ``response.completed`` event holds the whole answer."""

    def __init__(self) -> None:
        self.response: dict | None = None
        self.text: list[str] = []

    def feed(self, event: dict) -> None:
        if event.get("type") in ("response.completed", "response.incomplete", "response.failed"):
            self.response = event.get("response")
        elif event.get("type") == "response.output_text.delta":
            self.text.append(event.get("delta") or "")

    def result(self) -> dict[str, Any]:
        return self.response or {"object": "response", "output": [{"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "".join(self.text)}]}]}


_ASSEMBLERS = {"chat": _ChatAssembler, "responses": _ResponsesAssembler}


@dataclass
class LlmStream:
    """A streamed call whose first event already arrived (so the answer can start 200)."""

    outcome: Outcome
    first: Any
    rest: AsyncIterator[Any]
    timeout: float
    endpoint: str
    secrets: tuple[bytes, ...]
    #: The platform asked for the usage chunk; the caller did not and does not get it.
    hide_usage_chunk: bool = False
    assembler: Any = None
    _pending: list[bytes] = field(default_factory=list)

    async def events(self) -> AsyncIterator[bytes]:
        """SSE event blocks (``data: ...\\n\\n``) to relay, ``[DONE]`` excluded: the gateway sends
        it once the call is recorded. A failure midway ends the stream and is kept in
        ``outcome.error``."""
        self.assembler = _ASSEMBLERS[self.outcome.kind]()
        item = self.first
        try:
            while True:
                for block in self._blocks(item):
                    yield block
                try:
                    async with asyncio.timeout(self.timeout):
                        item = await anext(self.rest)
                except StopAsyncIteration:
                    break
            for block in self._flush():
                yield block
        except BaseException as error:
            if isinstance(error, (GeneratorExit, asyncio.CancelledError)):
                raise
            self.outcome.failure = provider_error(error, self.endpoint, self.secrets)
            self.outcome.error = self.outcome.failure.message
        finally:
            self.finish()
            await _close(self.rest)

    def finish(self) -> None:
        if self.assembler is None:
            return
        answer = self.assembler.result()
        self.outcome.answer = answer
        self.outcome.model = answer.get("model") if isinstance(answer, dict) else None
        self.outcome.usage = token_usage.usage_of(self.outcome.request, answer, self.outcome.kind)

    def _blocks(self, item: Any) -> list[bytes]:
        """What one line of the provider's stream (MLflow's passthrough relays raw lines) adds
        to the caller's stream: an event ends at a blank line."""
        if item.strip():
            self._pending.append(item if item.endswith(b"\n") else item + b"\n")
            return []
        return self._flush()

    def _flush(self) -> list[bytes]:
        if not self._pending:
            return []
        lines, self._pending = self._pending, []
        data = b"".join(line[5:].strip() for line in lines if line.startswith(b"data:"))
        if data == b"[DONE]":
            return []
        chunk = None
        if data:
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
        return self._event(b"".join(line for line in lines if not line.startswith(b"data:")), chunk, data)

    def _event(self, other_lines: bytes, chunk: Any, data: bytes) -> list[bytes]:
        if isinstance(chunk, dict):
            self.assembler.feed(chunk)
            if self.hide_usage_chunk and chunk.get("usage") and not chunk.get("choices"):
                return []
        return [other_lines + b"data: " + data + b"\n\n"] if data else ([other_lines + b"\n"] if other_lines else [])


async def _close(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # the provider's connection is going away anyway
            pass


class LlmCalls:
    def __init__(self, timeout: float):
        self.timeout = timeout

    async def call(self, loaded: LoadedEndpoint, kind: str, request: dict[str, Any], start_ns: int) -> Outcome | LlmStream:
        """Make the call. Returns the finished ``Outcome``, or an ``LlmStream`` to relay.

        Raises:
            AgentwharfError: the provider failed before answering (502, 504, 400, 429).
        """
        outcome = Outcome(kind=kind, request=request, start_ns=start_ns)
        try:
            # A stream connects at its first event, read in ``_stream``: within this block too.
            with loaded.pool.lent() if loaded.pool is not None else contextlib.nullcontext():
                if request.get("stream"):
                    return await self._stream(loaded, kind, request, outcome)
                async with asyncio.timeout(self.timeout):
                    answer = await self._answer(loaded, kind, request)
        except Exception as error:
            raise provider_error(error, loaded.name, loaded.secrets) from None
        outcome.answer = answer
        outcome.model = answer.get("model") if isinstance(answer, dict) else None
        outcome.usage = token_usage.usage_of(request, answer, kind)
        return outcome

    async def _answer(self, loaded: LoadedEndpoint, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        from mlflow.gateway.providers.base import PassthroughAction

        provider = loaded.provider(_TASK_OF_KIND[kind])
        if kind == "completions":
            from mlflow.gateway.schemas import completions

            answer = await provider.completions(completions.RequestPayload(**request))
            return orjson.loads(answer.model_dump_json(exclude_none=True))
        action = {"chat": PassthroughAction.OPENAI_CHAT, "embeddings": PassthroughAction.OPENAI_EMBEDDINGS,
                  "responses": PassthroughAction.OPENAI_RESPONSES}[kind]
        return await provider.passthrough(action, dict(request), {})

    async def _stream(self, loaded: LoadedEndpoint, kind: str, request: dict[str, Any], outcome: Outcome) -> LlmStream:
        from mlflow.gateway.providers.base import PassthroughAction

        provider = loaded.provider(_TASK_OF_KIND[kind])
        payload, hide = dict(request), False
        if kind == "chat" and not (payload.get("stream_options") or {}).get("include_usage"):
            payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
            hide = True
        action = PassthroughAction.OPENAI_CHAT if kind == "chat" else PassthroughAction.OPENAI_RESPONSES
        async with asyncio.timeout(self.timeout):
            stream = await provider.passthrough(action, payload, {})
        iterator = aiter(stream)
        # The first item decides the answer's status: a provider that fails or hangs before it
        # is a JSON error, not a 200 stream that breaks.
        try:
            async with asyncio.timeout(self.timeout):
                first = await anext(iterator)
        except StopAsyncIteration:
            first = b""
        except BaseException:
            await _close(iterator)
            raise
        return LlmStream(outcome=outcome, first=first, rest=iterator, timeout=self.timeout, endpoint=loaded.name,
                         secrets=loaded.secrets, hide_usage_chunk=hide)


def record(outcome: Outcome, *, endpoint: str, route: str, loaded: LoadedEndpoint | None, caller: str | None,
           max_field_chars: int) -> bytes:
    """The call's record: root span the request, one LLM span (MLflow's shape: model, provider,
    token usage) under it, the usage in the trace's metadata and for the row."""
    usage = outcome.usage
    response = outcome.answer if outcome.error is None or outcome.answer is not None else None
    attributes: dict[str, Any] = {}
    metadata = {"agentwharf.llm_call": outcome.kind}
    if loaded is not None:
        metadata["mlflow.gateway.endpointId"] = loaded.endpoint_id
        metadata["mlflow.gateway.requestType"] = outcome.kind
    if caller:
        metadata["mlflow.auth.username"] = caller
    children = []
    if usage is not None:
        metadata["mlflow.trace.tokenUsage"] = orjson.dumps(usage.mlflow()).decode()
        if usage.estimated:
            metadata["agentwharf.usage_estimated"] = "true"
        model = outcome.model or (loaded.config.models[0].model_name if loaded is not None and loaded.config.models else None)
        provider = loaded.provider_of(model) if loaded is not None else None
        children.append({
            "name": f"{provider or 'provider'}/{model or endpoint}", "span_type": "LLM" if outcome.kind != "embeddings" else "EMBEDDING",
            "start_ns": outcome.start_ns, "inputs": outcome.request, "outputs": response, "error": outcome.error,
            "attributes": {"mlflow.chat.tokenUsage": usage.mlflow(), "mlflow.llm.model": model, "mlflow.llm.provider": provider,
                           **({"agentwharf.usage_estimated": True} if usage.estimated else {})},
        })
    built = trace_record.build(
        name=_ROUTE_PATHS.get(route, f"/serving-endpoints/{endpoint}/invocations"), start_ns=outcome.start_ns,
        inputs=outcome.request, outputs=response, error=outcome.error, attributes=attributes, children=children,
        metadata=metadata, max_field_chars=max_field_chars, extra={"usage": usage.to_json()} if usage else None,
    )
    return trace_record.encode(built)
