"""The serving gateway over real HTTP: REST, server-sent events, the OpenAI-compatible route,
and every bad input the issue lists."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from tests.integration.conftest import ask, deployed_info_agent, sse_events
from tests.integration.platform_process import wait_until


@pytest.fixture(scope="module")
def served(platform, logged):
    with deployed_info_agent(logged, "main.tests.gateway") as deployment:
        yield deployment


def test_invocations_returns_a_responses_answer_with_a_request_id(http, served):
    answer = ask(http, f"/serving-endpoints/{served.endpoint_name}/invocations", "hello")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"]
    assert answer.json()["output"][0]["content"][0]["text"] == "Echo: hello"


def test_context_and_custom_inputs_are_accepted(http, served):
    body = {"input": [{"role": "user", "content": "hi"}], "context": {"conversation_id": "c1", "user_id": "u1"},
            "custom_inputs": {"env": []}}
    assert http.post(f"/serving-endpoints/{served.endpoint_name}/invocations", json=body).status_code == 200


def test_stream_sends_one_data_line_per_event_and_ends_cleanly(http, served):
    body = {"input": [{"role": "user", "content": "hi"}], "stream": True, "custom_inputs": {"events": 4}}
    answer = http.post(f"/serving-endpoints/{served.endpoint_name}/invocations", json=body)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer)
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert [e["type"] for e in parsed] == ["response.output_text.delta"] * 4 + ["response.output_item.done"]
    assert parsed[-1]["item"]["content"][0]["text"] == "Echo: hi"


def test_served_model_route_reaches_one_version(http, served):
    answer = http.post(served.query_endpoint, json={"input": [{"role": "user", "content": "v"}]})
    assert answer.json()["custom_outputs"]["entity"] == served.served_entity_name


def test_official_openai_client_with_and_without_streaming(platform, served):
    client = openai.OpenAI(base_url=f"{platform.base_url}/serving-endpoints", api_key=platform.token)
    response = client.responses.create(model=served.endpoint_name, input="from openai")
    assert response.output_text == "Echo: from openai"
    events = list(client.responses.create(model=served.endpoint_name, input=[{"role": "user", "content": "s"}], stream=True))
    types = [e.type for e in events]
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    assert events[-1].response.output[0].content[0].text == "Echo: s"


def test_openai_route_unknown_model_is_404(platform, served):
    client = openai.OpenAI(base_url=f"{platform.base_url}/serving-endpoints", api_key=platform.token, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-endpoint", input="x")


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code", "fragment"),
    [
        ("/serving-endpoints/nope/invocations", {"json": {"input": []}}, 404, "RESOURCE_DOES_NOT_EXIST", "nope"),
        ("/serving-endpoints/{ep}/served-models/nope_1/invocations", {"json": {"input": []}}, 404, "RESOURCE_DOES_NOT_EXIST", "nope_1"),
        ("/serving-endpoints/{ep}/invocations", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "INVALID_PARAMETER_VALUE", "Malformed JSON"),
        ("/serving-endpoints/{ep}/invocations", {"json": [1, 2]}, 400, "INVALID_PARAMETER_VALUE", "JSON object"),
        # A string input is one user message (as OpenAI's Responses API takes it); these are not taken.
        ("/serving-endpoints/{ep}/invocations", {"json": {"messages": []}}, 400, "INVALID_PARAMETER_VALUE", "'input'"),
        ("/serving-endpoints/{ep}/invocations", {"json": {"messages": [{"role": "user", "content": "hi"}]}}, 400,
         "INVALID_PARAMETER_VALUE", "send chat messages to POST /serving-endpoints/chat/completions"),
        ("/serving-endpoints/{ep}/invocations", {"json": {"messages": "hi"}}, 400, "INVALID_PARAMETER_VALUE", "'input'"),
        ("/serving-endpoints/{ep}/invocations", {"json": {"input": 5}}, 400, "INVALID_PARAMETER_VALUE", "input"),
        ("/serving-endpoints/{ep}/invocations", {"json": {"input": [{"content": "no role"}]}}, 400, "INVALID_PARAMETER_VALUE", "input.0.role"),
        ("/serving-endpoints/{ep}/invocations", {"content": b"input=x", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415, "UNSUPPORTED_MEDIA_TYPE", "application/json"),
        ("/serving-endpoints/responses", {"json": {"input": "x"}}, 400, "INVALID_PARAMETER_VALUE", "'model'"),
        ("/serving-endpoints/{ep}/nonsense", {"json": {}}, 404, "ENDPOINT_NOT_FOUND", "nonsense"),
    ],
)
def test_bad_requests_get_a_json_error_naming_the_problem(http, served, path, kwargs, status, code, fragment):
    answer = http.post(path.format(ep=served.endpoint_name), **kwargs)
    assert answer.status_code == status
    body = answer.json()
    assert body["error_code"] == code
    assert fragment in body["message"]
    assert "Traceback" not in answer.text


def test_streamed_bad_request_is_a_json_error_too(http, served):
    answer = http.post(f"/serving-endpoints/{served.endpoint_name}/invocations", json={"input": 5, "stream": True})
    assert answer.status_code == 400 and answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_get_is_not_allowed(http, served):
    answer = http.get(f"/serving-endpoints/{served.endpoint_name}/invocations")
    assert answer.status_code == 405 and answer.json()["error_code"] == "METHOD_NOT_ALLOWED"


def test_agent_error_is_a_500_with_its_message_and_the_worker_keeps_serving(http, served):
    path = f"/serving-endpoints/{served.endpoint_name}/invocations"
    pid = ask(http, path).json()["custom_outputs"]["pid"]
    answer = ask(http, path, **{"raise": "the tool backend said no"})
    assert answer.status_code == 500
    assert answer.json() == {"error_code": "MODEL_ERROR", "message": "ValueError: the tool backend said no"}
    assert "Traceback" not in answer.text
    after = ask(http, path)
    assert after.status_code == 200 and after.json()["custom_outputs"]["pid"] == pid


def test_error_midway_through_a_stream_ends_it_with_an_error_event(http, served):
    body = {"input": [{"role": "user", "content": "x"}], "stream": True, "custom_inputs": {"events": 2, "raise_midway": "lost the tool"}}
    events = sse_events(http.post(f"/serving-endpoints/{served.endpoint_name}/invocations", json=body))
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2]) == {"error_code": "MODEL_ERROR", "message": "RuntimeError: lost the tool"}


def test_client_disconnect_mid_stream_stops_the_agent(platform, served, tmp_path):
    marker = tmp_path / "closed"
    body = {"input": [{"role": "user", "content": "x"}], "stream": True,
            "custom_inputs": {"events": 200, "delay": 0.05, "closed_marker": str(marker)}}
    with httpx.Client(base_url=platform.base_url, timeout=30, headers=platform.headers) as client:
        with client.stream("POST", f"/serving-endpoints/{served.endpoint_name}/invocations", json=body) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")
    # The agent would stream for 10 s; the worker closes its generator right after the client left.
    wait_until(marker.exists, timeout=5, message="the agent's generator to be closed")


def test_concurrent_requests_share_a_worker(http, served):
    path = f"/serving-endpoints/{served.endpoint_name}/invocations"
    results: list[int] = []

    def call():
        results.append(ask(http, path, sleep=1).status_code)

    threads = [threading.Thread(target=call, name=f"concurrent-{i}") for i in range(8)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    # Eight one-second requests overlap inside one worker instead of queueing behind each other.
    assert time.monotonic() - started < 6


def test_openai_chat_completions_with_and_without_streaming(platform, served):
    client = openai.OpenAI(base_url=f"{platform.base_url}/serving-endpoints", api_key=platform.token)
    completion = client.chat.completions.create(
        model=served.endpoint_name, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "chat"}])
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "Echo: chat"
    assert completion.choices[0].finish_reason == "stop"

    chunks = list(client.chat.completions.create(
        model=served.endpoint_name, messages=[{"role": "user", "content": [{"type": "text", "text": "parts"}]}], stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "part0 part1 part2 "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_completions_without_messages_is_a_400_naming_them(http, served):
    answer = http.post("/serving-endpoints/chat/completions", json={"model": served.endpoint_name})
    assert answer.status_code == 400
    assert "'messages'" in answer.json()["message"]


def test_databricks_well_known_config_answers_without_auth(http):
    answer = http.get("/.well-known/databricks-config")
    assert answer.status_code == 200 and answer.json() == {}
