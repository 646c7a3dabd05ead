"""agentwharf.llm.calls and usage: request shapes, provider errors as errors of the tree, the
stream relayed as the caller asked for it, token usage reported or estimated, the record."""

import asyncio
import json
from types import SimpleNamespace

import orjson
import pytest

from agentwharf.errors import BadGateway, DeadlineExceeded, InvalidParameter, RequestLimitExceeded
from agentwharf.llm import usage
from agentwharf.llm.calls import LlmStream, Outcome, call_kind, parse_request, provider_error, record

KEY = b"sk-provider-key-0123456789"


def test_routes_by_task_and_the_message_names_the_routes_that_fit():
    assert call_kind("c", "llm/v1/chat", "invocations") == "chat"
    assert call_kind("c", "llm/v1/chat", "responses") == "responses"
    assert call_kind("e", "llm/v1/embeddings", "embeddings") == "embeddings"
    with pytest.raises(InvalidParameter, match="POST /serving-endpoints/e/invocations, POST /serving-endpoints/embeddings"):
        call_kind("e", "llm/v1/embeddings", "chat")
    with pytest.raises(InvalidParameter, match="llm/v1/completions"):
        call_kind("p", "llm/v1/completions", "responses")


@pytest.mark.parametrize("body, kind, message", [
    (b"{", "chat", "Malformed JSON"),
    (b"[]", "chat", "must be a JSON object"),
    (b"{}", "chat", "'messages' is required"),
    (b'{"messages": "hi"}', "chat", "must be a list of message objects"),
    (b'{"input": "x", "stream": "yes"}', "embeddings", "'stream' must be true or false"),
    (b'{"input": "x", "stream": true}', "embeddings", "Embeddings are not streamed"),
    (b'{"prompt": "x", "stream": true}', "completions", "Streaming is not supported for llm/v1/completions"),
    (b'{"model": "ep"}', "responses", "'input' is required"),
])
def test_bad_requests_are_refused_by_name(body, kind, message):
    with pytest.raises(InvalidParameter, match=message):
        parse_request(body, kind)


def test_model_names_the_endpoint_and_is_not_sent_on():
    assert parse_request(b'{"model": "ep", "messages": [{"role": "user", "content": "x"}], "tools": []}', "chat") == {
        "messages": [{"role": "user", "content": "x"}], "tools": []}


class Upstream(Exception):
    def __init__(self, status, detail):
        super().__init__(detail)
        self.status_code, self.detail = status, detail


@pytest.mark.parametrize("error, cls, status", [
    (Upstream(500, "boom"), BadGateway, 502),
    (Upstream(503, "busy"), BadGateway, 502),
    (Upstream(401, "bad key"), BadGateway, 502),
    (Upstream(429, "slow down"), RequestLimitExceeded, 429),
    (Upstream(400, "bad tools"), InvalidParameter, 400),
    (Upstream(504, "upstream timeout"), DeadlineExceeded, 504),
    (asyncio.TimeoutError(), DeadlineExceeded, 504),
    (ConnectionRefusedError("refused"), BadGateway, 502),
])
def test_provider_errors_become_errors_of_the_tree(error, cls, status):
    found = provider_error(error, "ep", ())
    assert isinstance(found, cls) and found.http_status == status and "'ep'" in found.message


def test_a_key_the_provider_echoes_never_reaches_the_message():
    found = provider_error(Upstream(401, f"Incorrect API key provided: Bearer {KEY.decode()}"), "ep", (KEY,))
    assert KEY.decode() not in found.message and "[REDACTED]" in found.message


def test_usage_reported_or_estimated():
    body = {"messages": [{"role": "user", "content": "a" * 40}]}
    answer = {"choices": [{"message": {"role": "assistant", "content": "b" * 20}}]}
    assert usage.usage_of(body, {**answer, "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}},
                          "chat") == usage.Usage(7, 3, 10)
    assert usage.usage_of(body, answer, "chat") == usage.Usage(10, 5, 15, estimated=True)
    assert usage.usage_of({"input": "x"}, {"output": [], "usage": {"input_tokens": 4, "output_tokens": 6}},
                          "responses") == usage.Usage(4, 6, 10)
    assert usage.usage_of({"input": ["abcd"]}, {"data": [], "usage": {"prompt_tokens": 2, "total_tokens": 2}},
                          "embeddings") == usage.Usage(2, 0, 2)
    assert usage.max_tokens({"max_completion_tokens": 64}) == 64 and usage.max_tokens({"max_tokens": True}) is None


def sse(*events):
    lines = []
    for event in events:
        data = event if isinstance(event, bytes) else json.dumps(event).encode()
        lines += [b"data: " + data + b"\n", b"\n"]
    return lines


async def lines_of(items):
    for item in items:
        yield item


def chunk(content=None, finish=None, tools=None):
    delta = {}
    if content is not None:
        delta["content"] = content
    if tools:
        delta["tool_calls"] = tools
    return {"id": "c1", "created": 1, "model": "m", "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def relay(lines, hide=True, timeout=5.0):
    outcome = Outcome(kind="chat", request={"messages": [{"role": "user", "content": "hi"}], "stream": True})
    stream = LlmStream(outcome=outcome, first=lines[0], rest=lines_of(lines[1:]), timeout=timeout, endpoint="ep",
                       secrets=(KEY,), hide_usage_chunk=hide)

    async def collect():
        return [block async for block in stream.events()]

    return asyncio.run(collect()), outcome


def test_a_stream_is_relayed_event_by_event_and_assembled_for_the_record():
    usage_chunk = {"id": "c1", "created": 1, "model": "m", "choices": [],
                   "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    blocks, outcome = relay(sse(chunk("Hel"), chunk("lo"), chunk(finish="stop"), usage_chunk, b"[DONE]"))
    payloads = [orjson.loads(b[len(b"data: "):]) for b in blocks]
    assert [p["choices"][0]["delta"].get("content") for p in payloads] == ["Hel", "lo", None]
    assert all(b.endswith(b"\n\n") for b in blocks)  # [DONE] and the usage chunk the caller did not ask for: held back
    assert outcome.answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert outcome.usage == usage.Usage(1, 2, 3) and outcome.error is None


def test_a_usage_chunk_the_caller_asked_for_is_relayed():
    usage_chunk = {"id": "c1", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    blocks, _ = relay(sse(chunk("x"), usage_chunk), hide=False)
    assert len(blocks) == 2


def test_tool_call_deltas_are_joined():
    first = [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]
    rest = [{"index": 0, "function": {"arguments": '{"city": "Oslo"}'}}]
    _, outcome = relay(sse(chunk(tools=first), chunk(tools=rest), chunk(finish="tool_calls")))
    message = outcome.answer["choices"][0]["message"]
    assert message["tool_calls"] == [{"id": "call_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert outcome.answer["choices"][0]["finish_reason"] == "tool_calls" and outcome.usage.estimated


def test_a_stream_that_stalls_ends_with_a_deadline_kept_for_the_record():
    async def stalls():
        yield b"\n"
        await asyncio.sleep(5)

    outcome = Outcome(kind="chat", request={"messages": []})
    stream = LlmStream(outcome=outcome, first=b"data: " + json.dumps(chunk("x")).encode() + b"\n", rest=stalls(),
                       timeout=0.1, endpoint="ep", secrets=())

    async def collect():
        return [block async for block in stream.events()]

    blocks = asyncio.run(collect())
    assert len(blocks) == 1 and isinstance(outcome.failure, DeadlineExceeded)
    assert outcome.answer["choices"][0]["message"]["content"] == "x"


def test_the_record_has_an_llm_span_and_token_usage_in_mlflows_shapes():
    outcome = Outcome(kind="chat", request={"messages": [{"role": "user", "content": "hi"}]}, start_ns=1,
                      answer={"model": "m", "choices": []}, usage=usage.Usage(5, 7, 12), model="m")
    loaded = SimpleNamespace(endpoint_id="e-123", config=SimpleNamespace(models=[SimpleNamespace(model_name="m")]),
                             provider_of=lambda model: "openai")
    built = orjson.loads(record(outcome, endpoint="ep", route="chat", loaded=loaded, caller="alice", max_field_chars=10_000))
    assert built["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12, "estimated": False}
    assert json.loads(built["metadata"]["mlflow.trace.tokenUsage"]) == {"input_tokens": 5, "output_tokens": 7,
                                                                       "total_tokens": 12}
    assert built["metadata"]["mlflow.gateway.endpointId"] == "e-123" and built["metadata"]["mlflow.auth.username"] == "alice"
    root, llm = built["spans"]
    assert root["name"] == "/serving-endpoints/chat/completions" and llm["parent_span_id"] == root["span_id"]
    assert llm["name"] == "openai/m" and json.loads(llm["attributes"]["mlflow.spanType"]) == "LLM"
    assert json.loads(llm["attributes"]["mlflow.chat.tokenUsage"])["total_tokens"] == 12


def test_traffic_split_and_fallbacks_as_mlflows_linkages():
    from agentwharf.llm.mlflow_admin import EntityObjects, GatewayAdmin

    objects = {n: EntityObjects(f"d-{n}", f"s-{n}", True) for n in ("a", "b", "c")}
    single = GatewayAdmin.model_configs([("a", 100), ("b", 0), ("c", 0)], ["a", "b", "c"], objects, fallback=True)
    assert single["model_configs"] == [
        {"model_definition_id": "d-a", "linkage_type": "PRIMARY", "weight": 1.0},
        {"model_definition_id": "d-b", "linkage_type": "FALLBACK", "weight": 1.0, "fallback_order": 0},
        {"model_definition_id": "d-c", "linkage_type": "FALLBACK", "weight": 1.0, "fallback_order": 1}]
    assert single["fallback_config"] == {"strategy": "SEQUENTIAL", "max_attempts": 2} and "routing_strategy" not in single
    split = GatewayAdmin.model_configs([("a", 70), ("b", 30)], ["a", "b"], objects, fallback=False)
    assert split["routing_strategy"] == "REQUEST_BASED_TRAFFIC_SPLIT" and "fallback_config" not in split
    assert [(c["model_definition_id"], c["weight"]) for c in split["model_configs"]] == [("d-a", 0.7), ("d-b", 0.3)]
