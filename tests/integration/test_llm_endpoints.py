"""LLM endpoints on a real platform, against a scripted OpenAI-compatible provider (a real HTTP
server in its own process; the platform only knows its URL and key): create them in
Databricks' shapes on MLflow's AI Gateway, call them with the official client, record every
call with its token usage, limit callers, fall back, fail as JSON, let agents and the guide's
judges use them, and never leak the provider's key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import mlflow
import openai
import pytest
from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
from mlflow.models.resources import DatabricksServingEndpoint

from tests.integration.conftest import AGENTS, rows_for
from tests.integration.platform_process import wait_until
from tests.llm_provider import ScriptedProvider, free_port

KEY = f"sk-aw-test-{uuid.uuid4().hex}"
ROOT = Path(__file__).resolve().parents[2]
HI = [{"role": "user", "content": "hello there"}]
_lock = threading.Lock()


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with ScriptedProvider(KEY, tmp_path_factory.mktemp("provider")) as running:
        yield running


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def external(model: str, api_base: str, task: str = "llm/v1/chat", key: str | None = KEY, name: str = "main") -> dict:
    config = {"openai_api_base": api_base, **({"openai_api_key_plaintext": key} if key else {})}
    return {"name": name, "external_model": {"name": model, "provider": "custom", "task": task, "openai_config": config}}


@pytest.fixture(scope="module")
def made(http):
    names: list[str] = []
    yield names
    for name in names:
        http.delete(f"/api/2.0/serving-endpoints/{name}")


@pytest.fixture
def llm(http, provider, made):
    """Create an LLM endpoint on the scripted provider with a model of its own; returns
    (endpoint, model). ``script`` says how that model answers."""

    def create(task: str = "llm/v1/chat", ai_gateway: dict | None = None, **script) -> tuple[str, str]:
        name, model = unique("llm"), unique("model")
        if script:
            provider.script(model, **script)
        body = {"name": name, "config": {"served_entities": [external(model, provider.api_base, task)]}}
        if ai_gateway:
            body["ai_gateway"] = ai_gateway
        answer = http.post("/api/2.0/serving-endpoints", json=body)
        assert answer.status_code == 200, answer.text
        made.append(name)
        return name, model

    return create


@pytest.fixture(scope="module")
def people(platform, http):
    """alice and carol (users) and a service principal, each with a token and a client."""
    suffix = uuid.uuid4().hex[:6]
    found = {}
    for kind, key, who in (("Users", "userName", "alice"), ("Users", "userName", "carol"),
                           ("ServicePrincipals", "applicationId", "robot")):
        name = f"{who}-{suffix}"
        assert http.post(f"/api/2.0/preview/scim/v2/{kind}", json={key: name}).status_code == 200
        token = http.post("/api/2.0/token-management/on-behalf-of/tokens", json={"application_id": name}).json()["token_value"]
        found[who] = {"name": name, "token": token,
                      "http": httpx.Client(base_url=platform.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"})}
    yield found
    for person in found.values():
        person["http"].close()


def grant(http, endpoint: str, principal: str, level: str = "CAN_QUERY") -> None:
    answer = http.patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}",
                        json={"access_control_list": [{"user_name": principal, "permission_level": level}]})
    assert answer.status_code == 200, answer.text


def client_for(platform, token: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/serving-endpoints", api_key=token or platform.token, max_retries=0)


def json_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_code"] == code, body
    return body["message"]


# -- item 1: create, read, change, delete, in Databricks' shapes on MLflow's AI Gateway -------------


def mlflow_gateway_endpoint(http, name: str) -> dict | None:
    answer = http.get("/api/3.0/mlflow/gateway/endpoints/get", params={"name": name})
    return answer.json()["endpoint"] if answer.status_code == 200 else None


def mlflow_secret_names(http) -> set[str]:
    return {s["secret_name"] for s in http.get("/api/3.0/mlflow/gateway/secrets/list").json().get("secrets", [])}


def test_llm_endpoint_lifecycle_in_databricks_shapes_backed_by_mlflows_gateway(http, provider, made):
    name, model, other = unique("llm"), unique("model"), unique("model")
    created = http.post("/api/2.0/serving-endpoints", json={
        "name": name, "config": {"served_entities": [external(model, provider.api_base)]},
        "tags": [{"key": "team", "value": "search"}]})
    assert created.status_code == 200, created.text
    made.append(name)
    view = http.get(f"/api/2.0/serving-endpoints/{name}").json()
    assert view["task"] == "llm/v1/chat" and view["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    [entity] = view["config"]["served_entities"]
    assert entity["external_model"] == {"name": model, "provider": "custom", "task": "llm/v1/chat",
                                        "openai_config": {"openai_api_base": provider.api_base}}
    assert entity["state"]["deployment"] == "DEPLOYMENT_READY"
    assert view["config"]["traffic_config"] == {"routes": [{"served_model_name": "main", "traffic_percentage": 100}]}
    assert name in {e["name"] for e in http.get("/api/2.0/serving-endpoints").json()["endpoints"]}
    assert not any(d["endpoint_name"] == name for d in http.get("/api/2.0/agents/deployments").json()["chain_deployments"])

    # MLflow's AI Gateway holds it (its UI lists it): the model, and the key as its own secret.
    gateway = mlflow_gateway_endpoint(http, name)
    assert [m["model_definition"]["model_name"] for m in gateway["model_mappings"]] == [model]
    assert gateway["experiment_id"] == view["experiment_id"]
    assert f"agentwharf/{name}/main" in mlflow_secret_names(http)
    listed = http.get("/ajax-api/3.0/mlflow/gateway/endpoints/list").json()["endpoints"]
    assert name in {e["name"] for e in listed}

    # A second model, half the traffic: MLflow splits it.
    config = {"served_entities": [external(model, provider.api_base), external(other, provider.api_base, name="second")],
              "traffic_config": {"routes": [{"served_model_name": "main", "traffic_percentage": 50},
                                            {"served_model_name": "second", "traffic_percentage": 50}]}}
    updated = http.put(f"/api/2.0/serving-endpoints/{name}/config", json=config)
    assert updated.status_code == 200, updated.text
    assert updated.json()["config"]["config_version"] == 2
    gateway = mlflow_gateway_endpoint(http, name)
    assert sorted((m["model_definition"]["model_name"], m["weight"]) for m in gateway["model_mappings"]) == sorted(
        [(model, 0.5), (other, 0.5)])
    answered = {http.post(f"/serving-endpoints/{name}/invocations", json={"messages": HI}).json()["model"] for _ in range(16)}
    assert answered == {model, other}
    # Sent back as GET shows it (no key): the stored keys are kept.
    echoed = {"served_entities": updated.json()["config"]["served_entities"],
              "traffic_config": {"routes": [{"served_model_name": "main", "traffic_percentage": 100},
                                            {"served_model_name": "second", "traffic_percentage": 0}]}}
    assert http.put(f"/api/2.0/serving-endpoints/{name}/config", json=echoed).status_code == 200
    assert {http.post(f"/serving-endpoints/{name}/invocations", json={"messages": HI}).json()["model"] for _ in range(4)} == {model}

    deleted = http.delete(f"/api/2.0/serving-endpoints/{name}")
    assert deleted.status_code == 200
    json_error(http.get(f"/api/2.0/serving-endpoints/{name}"), 404, "RESOURCE_DOES_NOT_EXIST")
    assert mlflow_gateway_endpoint(http, name) is None
    assert not any(s.startswith(f"agentwharf/{name}/") for s in mlflow_secret_names(http))
    json_error(http.post(f"/serving-endpoints/{name}/invocations", json={"messages": HI}), 404, "RESOURCE_DOES_NOT_EXIST")


@pytest.mark.parametrize("entity, status, code, says", [
    ({"external_model": {"name": "m", "provider": "custom", "openai_config": {"openai_api_base": "http://x/v1"}}},
     400, "INVALID_PARAMETER_VALUE", "task must be one of"),
    ({"external_model": {"name": "m", "provider": "openai", "task": "llm/v1/chat", "openai_config": {}}},
     400, "INVALID_PARAMETER_VALUE", "openai_api_key_plaintext is required for provider 'openai'"),
    ({"external_model": {"name": "m", "provider": "anthropic", "task": "llm/v1/chat"}}, 501, "NOT_IMPLEMENTED", "anthropic"),
    ({"external_model": {"name": "m", "provider": "custom", "task": "llm/v1/chat",
                         "openai_config": {"openai_api_base": "http://127.0.0.1:9/v1",
                                           "openai_api_key": "{{secrets/nobody/nothing}}"}}},
     400, "INVALID_PARAMETER_VALUE", "No secret named 'nobody/nothing'"),
])
def test_bad_llm_configs_are_refused_by_name_and_change_nothing(http, entity, status, code, says):
    name = unique("bad")
    answer = http.post("/api/2.0/serving-endpoints", json={"name": name, "config": {"served_entities": [entity]}})
    assert says in json_error(answer, status, code)
    assert http.get(f"/api/2.0/serving-endpoints/{name}").status_code == 404
    assert mlflow_gateway_endpoint(http, name) is None


def test_an_llm_endpoint_and_an_agent_config_do_not_mix(http, llm):
    name, _model = llm()
    agent = {"served_entities": [{"entity_name": "main.default.echo", "entity_version": "1"}]}
    assert "is an LLM endpoint" in json_error(http.put(f"/api/2.0/serving-endpoints/{name}/config", json=agent),
                                             400, "INVALID_PARAMETER_VALUE")


# -- item 2: called OpenAI-compatible, streaming and tool calls included ----------------------------


def test_the_official_client_chats_completes_embeds_and_answers_responses(platform, http, llm, provider):
    chat, model = llm()
    completions, _ = llm("llm/v1/completions")
    embeddings, _ = llm("llm/v1/embeddings")
    client = client_for(platform)
    assert client.chat.completions.create(model=chat, messages=HI).choices[0].message.content == "echo: hello there"
    streamed = list(client.chat.completions.create(model=chat, messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices).strip() == "echo: hello there"
    assert all(c.choices for c in streamed)  # the usage chunk the platform asked for is not passed on
    with_usage = list(client.chat.completions.create(model=chat, messages=HI, stream=True,
                                                     stream_options={"include_usage": True}))
    assert with_usage[-1].usage.total_tokens == 5  # ...unless the caller asked for it
    assert client.completions.create(model=completions, prompt="say hi").choices[0].text == "echo: say hi"
    vectors = client.embeddings.create(model=embeddings, input=["a", "bbb"])
    assert [len(d.embedding) for d in vectors.data] == [4, 4] and vectors.data[1].embedding[0] == 3.0
    assert client.responses.create(model=chat, input="hey").output_text == "echo: hey"
    events = [e.type for e in client.responses.create(model=chat, input="hey you", stream=True)]
    assert events[0] == "response.created" and events[-1] == "response.completed"
    # The provider got the provider's model name, never the endpoint's, with the key MLflow holds.
    calls = provider.calls(model)
    assert calls and all(c["body"]["model"] == model for c in calls)
    assert {c["authorization"] for c in calls} == {f"Bearer {KEY}"}
    # invocations takes the task's own shape.
    assert http.post(f"/serving-endpoints/{embeddings}/invocations", json={"input": "x"}).json()["object"] == "list"
    assert "POST /serving-endpoints/embeddings" in json_error(
        http.post("/serving-endpoints/chat/completions", json={"model": embeddings, "messages": HI}), 400, "INVALID_PARAMETER_VALUE")
    assert "'messages' is required" in json_error(http.post(f"/serving-endpoints/{chat}/invocations", json={"input": "x"}),
                                                  400, "INVALID_PARAMETER_VALUE")
    assert "Streaming is not supported" in json_error(
        http.post(f"/serving-endpoints/{completions}/invocations", json={"prompt": "x", "stream": True}), 400,
        "INVALID_PARAMETER_VALUE")


TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}}}}}
CALL = [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]


def test_tool_calls_pass_through_plain_and_streamed(platform, llm, provider):
    name, model = llm(tool_calls=CALL, after_tool="It is sunny in {content}")
    client = client_for(platform)
    first = client.chat.completions.create(model=name, messages=HI, tools=[TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Oslo"}')
    assert provider.calls(model)[-1]["body"]["tools"] == [TOOL]
    follow_up = [*HI, first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": "call_1", "content": "Oslo"}]
    assert client.chat.completions.create(model=name, messages=follow_up, tools=[TOOL]).choices[0].message.content == \
        "It is sunny in Oslo"
    chunks = list(client.chat.completions.create(model=name, messages=HI, tools=[TOOL], stream=True))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and chunks[-1].choices[0].finish_reason == "tool_calls"


# -- item 2: every call a trace and a row with its usage, durable like agent requests ----------------


def test_every_call_is_a_trace_and_a_row_with_token_usage(platform, http, llm, provider):
    name, model = llm()
    quiet, quiet_model = llm(usage=False)
    ids = {}
    for label, endpoint, body in (("plain", name, {"messages": HI}), ("stream", name, {"messages": HI, "stream": True}),
                                  ("no_usage", quiet, {"messages": [{"role": "user", "content": "x" * 40}]}),
                                  ("no_usage_stream", quiet, {"messages": HI, "stream": True})):
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=body, headers={"x-request-id": label})
        assert answer.status_code == 200, answer.text
        ids[label] = answer.headers["x-agentwharf-request-id"]
    rows = {**rows_for(http, name, {ids["plain"], ids["stream"]}), **rows_for(http, quiet, {ids["no_usage"], ids["no_usage_stream"]})}
    plain, stream = rows[ids["plain"]], rows[ids["stream"]]
    for row in (plain, stream):
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["usage_estimated"]) == (2, 3, 5, False)
        assert row["status_code"] == 200 and row["caller"] == "admin" and row["latency_ms"] > 0
        assert row["model_name"] == model and row["served_entity"] == "main"
    assert stream["stream"] is True and json.loads(stream["response"])["choices"][0]["message"]["content"].strip() == \
        "echo: hello there"
    estimated = rows[ids["no_usage"]]
    assert estimated["usage_estimated"] is True and estimated["prompt_tokens"] == 10 and estimated["total_tokens"] > 10
    assert rows[ids["no_usage_stream"]]["usage_estimated"] is True
    # The trace, read back through MLflow's client: token usage where MLflow's UI reads it, an LLM span.
    trace = mlflow.get_trace(plain["trace_id"])
    assert trace.info.token_usage == {"input_tokens": 2, "output_tokens": 3, "total_tokens": 5}
    assert trace.info.trace_metadata["agentwharf.endpoint"] == name
    experiment = http.get(f"/api/2.0/serving-endpoints/{name}").json()["experiment_id"]
    assert trace.info.experiment_id == experiment
    [root] = [s for s in trace.data.spans if s.parent_id is None]
    [llm_span] = [s for s in trace.data.spans if s.parent_id == root.span_id]
    assert llm_span.span_type == "LLM" and llm_span.attributes["mlflow.llm.model"] == model
    assert llm_span.attributes["mlflow.chat.tokenUsage"]["total_tokens"] == 5
    assert mlflow.get_trace(estimated["trace_id"]).info.trace_metadata["agentwharf.usage_estimated"] == "true"


# -- faults: down is 502, a hang 504, both JSON and both recorded ------------------------------------


def test_provider_down_is_502_and_a_hang_is_504_json_and_both_are_recorded(http, llm, provider, made):
    down = unique("down")
    body = {"name": down, "config": {"served_entities": [external("m", f"http://127.0.0.1:{free_port()}/v1")]}}
    assert http.post("/api/2.0/serving-endpoints", json=body).status_code == 200
    made.append(down)
    refused = http.post(f"/serving-endpoints/{down}/invocations", json={"messages": HI})
    assert "could not be reached" in json_error(refused, 502, "BAD_GATEWAY")
    streamed = http.post(f"/serving-endpoints/{down}/invocations", json={"messages": HI, "stream": True})
    json_error(streamed, 502, "BAD_GATEWAY")  # before the stream starts: a JSON error, not a broken stream

    hang, _model = llm(hang=30)
    started = time.monotonic()
    timed_out = http.post(f"/serving-endpoints/{hang}/invocations", json={"messages": HI})
    assert "did not answer in time" in json_error(timed_out, 504, "DEADLINE_EXCEEDED")
    assert time.monotonic() - started < 15  # AGENTWHARF_LLM_REQUEST_TIMEOUT is 5 s in these tests
    stalls, _model = llm(chunk_delay=30)
    stalled = http.post(f"/serving-endpoints/{stalls}/invocations", json={"messages": HI, "stream": True})
    assert stalled.status_code == 200 and "DEADLINE_EXCEEDED" in stalled.text and "[DONE]" in stalled.text
    failing, _model = llm(status=500)
    assert "failed (500)" in json_error(http.post(f"/serving-endpoints/{failing}/invocations", json={"messages": HI}),
                                        502, "BAD_GATEWAY")

    ids = {down: {refused.headers["x-agentwharf-request-id"], streamed.headers["x-agentwharf-request-id"]},
           hang: {timed_out.headers["x-agentwharf-request-id"]}, stalls: {stalled.headers["x-agentwharf-request-id"]}}
    statuses = {endpoint: sorted(r["status_code"] for r in rows_for(http, endpoint, found).values())
                for endpoint, found in ids.items()}
    assert statuses == {down: [502, 502], hang: [504], stalls: [504]}


def test_fallback_to_the_next_entity_on_a_provider_5xx(http, provider, made):
    name, broken, backup = unique("fb"), unique("model"), unique("model")
    provider.script(broken, status=503)
    config = {"served_entities": [external(broken, provider.api_base), external(backup, provider.api_base, name="backup")],
              "traffic_config": {"routes": [{"served_model_name": "main", "traffic_percentage": 100},
                                            {"served_model_name": "backup", "traffic_percentage": 0}]}}
    assert http.post("/api/2.0/serving-endpoints", json={"name": name, "config": config}).status_code == 200
    made.append(name)
    json_error(http.post(f"/serving-endpoints/{name}/invocations", json={"messages": HI}), 502, "BAD_GATEWAY")
    settings = http.put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json={"fallback_config": {"enabled": True}})
    assert settings.status_code == 200 and settings.json() == {"fallback_config": {"enabled": True}}
    answer = http.post(f"/serving-endpoints/{name}/invocations", json={"messages": HI})
    assert answer.status_code == 200 and answer.json()["model"] == backup
    row = rows_for(http, name, {answer.headers["x-agentwharf-request-id"]})[answer.headers["x-agentwharf-request-id"]]
    assert row["served_entity"] == "backup"
    streamed = http.post(f"/serving-endpoints/{name}/invocations", json={"messages": HI, "stream": True})
    assert streamed.status_code == 200 and backup in streamed.text
    assert len(provider.calls(broken)) >= 3  # tried first every time


# -- item 3: AI gateway settings and rate limits ---------------------------------------------------


def test_ai_gateway_settings_put_get_and_refusals(http, llm, people):
    name, _model = llm()
    settings = {"rate_limits": [{"calls": 100, "key": "user", "renewal_period": "minute"},
                                {"calls": 10, "tokens": 1000, "key": "user", "principal": people["alice"]["name"],
                                 "renewal_period": "minute"}],
                "usage_tracking_config": {"enabled": True},
                "inference_table_config": {"enabled": True, "catalog_name": "main", "schema_name": "logs"}}
    put = http.put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json=settings)
    assert put.status_code == 200 and put.json() == settings
    assert http.get(f"/api/2.0/serving-endpoints/{name}/ai-gateway").json() == settings
    assert http.get(f"/api/2.0/serving-endpoints/{name}").json()["ai_gateway"] == settings
    assert "no user or service principal named 'ghost'" in json_error(
        http.put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json={"rate_limits": [
            {"calls": 1, "key": "user", "principal": "ghost"}]}), 400, "INVALID_PARAMETER_VALUE")
    assert "is a user, not a service_principal" in json_error(
        http.put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json={"rate_limits": [
            {"calls": 1, "key": "service_principal", "principal": people["alice"]["name"]}]}), 400, "INVALID_PARAMETER_VALUE")
    json_error(http.put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json={"rate_limits": [
        {"calls": 1, "key": "user_group", "principal": "team"}]}), 501, "NOT_IMPLEMENTED")
    assert "guardrails" in json_error(http.put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json={
        "guardrails": {"input": {"safety": True}}}), 501, "NOT_IMPLEMENTED")
    assert http.get(f"/api/2.0/serving-endpoints/{name}/ai-gateway").json() == settings  # refusals changed nothing
    grant(http, name, people["alice"]["name"])
    json_error(people["alice"]["http"].put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json={}), 403, "PERMISSION_DENIED")
    json_error(http.put("/api/2.0/serving-endpoints/nope-nothing/ai-gateway", json={}), 404, "RESOURCE_DOES_NOT_EXIST")
    # usage_tracking_config is MLflow's gateway endpoint's own usage tracking.
    assert mlflow_gateway_endpoint(http, name)["usage_tracking"] is True
    assert http.put(f"/api/2.0/serving-endpoints/{name}/ai-gateway", json={"usage_tracking_config": {"enabled": False}}
                    ).status_code == 200
    assert mlflow_gateway_endpoint(http, name).get("usage_tracking", False) is False


def burst(client: httpx.Client, path: str, body: dict, count: int) -> list[httpx.Response]:
    with ThreadPoolExecutor(count, thread_name_prefix="llm-burst") as pool:
        return list(pool.map(lambda _: client.post(path, json=body), range(count)))


def test_call_limits_per_caller_hold_under_concurrency(http, llm, people):
    name, _model = llm(ai_gateway={"rate_limits": [{"calls": 5, "key": "user", "renewal_period": "minute"},
                                                   {"calls": 2, "key": "service_principal",
                                                    "principal": people["robot"]["name"], "renewal_period": "minute"}]})
    for who in ("alice", "carol", "robot"):
        grant(http, name, people[who]["name"])
    answers = burst(people["alice"]["http"], f"/serving-endpoints/{name}/invocations", {"messages": HI}, 12)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [429] * 7
    refused = next(a for a in answers if a.status_code == 429)
    assert "5 calls per minute" in json_error(refused, 429, "REQUEST_LIMIT_EXCEEDED")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # carol has her own window; the service principal its stricter own limit.
    assert people["carol"]["http"].post(f"/serving-endpoints/{name}/invocations", json={"messages": HI}).status_code == 200
    robot = burst(people["robot"]["http"], f"/serving-endpoints/{name}/invocations", {"messages": HI}, 4)
    assert sorted(a.status_code for a in robot) == [200, 200, 429, 429]
    # Refused calls are recorded too.
    ids = {a.headers["x-agentwharf-request-id"] for a in answers}
    assert sorted(r["status_code"] for r in rows_for(http, name, ids).values()) == statuses


def test_token_limits_overshoot_by_at_most_one_call_under_concurrency(http, llm, people):
    usage = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}
    name, _model = llm(usage=usage, ai_gateway={"rate_limits": [{"tokens": 100, "key": "endpoint",
                                                                  "renewal_period": "minute"}]})
    answers = burst(http, f"/serving-endpoints/{name}/invocations", {"messages": HI}, 10)
    answered = [a for a in answers if a.status_code == 200]
    spent = sum(a.json()["usage"]["total_tokens"] for a in answered)
    assert 100 <= spent <= 100 + 30, spent
    assert all(a.status_code == 429 for a in answers if a.status_code != 200)
    json_error(http.post(f"/serving-endpoints/{name}/invocations", json={"messages": HI}), 429, "REQUEST_LIMIT_EXCEEDED")


def test_agent_endpoints_are_rate_limited_too(http, logged):
    from tests.integration.conftest import deployed_info_agent

    with deployed_info_agent(logged, f"main.limits.info{uuid.uuid4().hex[:6]}") as deployment:
        endpoint = deployment.endpoint_name
        # AGENTWHARF_JUDGE_ENDPOINT: a deployed model's judges default to the platform's judge endpoint.
        env = http.post(f"/serving-endpoints/{endpoint}/invocations", json={
            "input": [{"role": "user", "content": "hi"}], "custom_inputs": {"env": ["MLFLOW_GENAI_JUDGE_DEFAULT_MODEL"]}})
        assert env.json()["custom_outputs"]["env"] == {"MLFLOW_GENAI_JUDGE_DEFAULT_MODEL": "gateway:/judge"}
        assert "token limits apply to LLM endpoints" in json_error(
            http.put(f"/api/2.0/serving-endpoints/{endpoint}/ai-gateway", json={"rate_limits": [{"tokens": 5, "key": "user"}]}),
            400, "INVALID_PARAMETER_VALUE")
        put = http.put(f"/api/2.0/serving-endpoints/{endpoint}/ai-gateway",
                       json={"rate_limits": [{"calls": 3, "key": "endpoint", "renewal_period": "minute"}]})
        assert put.status_code == 200, put.text
        body = {"input": [{"role": "user", "content": "hi"}]}
        answers = burst(http, f"/serving-endpoints/{endpoint}/invocations", body, 8)
        assert sorted(a.status_code for a in answers) == [200] * 3 + [429] * 5
        json_error(http.post("/serving-endpoints/responses", json={"model": endpoint, "input": "hi"}), 429,
                   "REQUEST_LIMIT_EXCEEDED")


# -- MLflow's own gateway routes (its Playground, gateway:/ judges) go through the platform --------


def test_mlflows_gateway_routes_are_answered_by_the_platform_for_its_llm_endpoints(http, llm, people):
    name, _model = llm()
    answer = http.post("/gateway/mlflow/v1/chat/completions", json={"model": name, "messages": HI})
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"] == "echo: hello there"
    by_path = http.post(f"/gateway/{name}/mlflow/invocations", json={"messages": HI})
    assert by_path.status_code == 200
    responses = http.post("/gateway/openai/v1/responses", json={"model": name, "input": "hey"})
    assert responses.status_code == 200 and responses.json()["output"][0]["content"][0]["text"] == "echo: hey"
    ids = {a.headers["x-agentwharf-request-id"] for a in (answer, by_path, responses)}
    assert {r["route"] for r in rows_for(http, name, ids).values()} == {"chat", "invocations", "responses"}
    # The platform's permissions apply there too.
    json_error(people["carol"]["http"].post("/gateway/mlflow/v1/chat/completions", json={"model": name, "messages": HI}),
               403, "PERMISSION_DENIED")
    # MLflow's own endpoints (not the platform's) are still MLflow's to answer.
    assert http.post("/gateway/mlflow/v1/chat/completions", json={"model": "not-a-platform-endpoint", "messages": HI}
                     ).status_code in (400, 404)


# -- item 4: agents reach LLM endpoints as declared resources ------------------------------------------


def log_agent(path: Path, model: str, endpoints: list[str], on_behalf_of: bool = False) -> None:
    mlflow.set_experiment("/tests/llm-agents")
    policy = AuthPolicy(
        system_auth_policy=SystemAuthPolicy(resources=[DatabricksServingEndpoint(endpoint_name=e) for e in endpoints]),
        user_auth_policy=UserAuthPolicy(api_scopes=["serving.serving-endpoints"]) if on_behalf_of else None)
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="agent", python_model=str(path), auth_policy=policy,
                                      pip_requirements=["mlflow", "openai"]).model_uri
    mlflow.register_model(uri, model)


def deploy(model: str, **env) -> str:
    from agentwharf import agents

    return agents.deploy(model, "1", env_manager="local", environment_vars=env or None).endpoint_name


def test_agents_reach_declared_llm_endpoints_with_their_credential_and_nothing_else(http, llm, people):
    declared, _ = llm()
    undeclared, _ = llm()
    model = f"main.llm.caller{uuid.uuid4().hex[:6]}"
    log_agent(AGENTS / "llm_caller_agent.py", model, [declared])
    endpoint = deploy(model)

    def ask(**custom) -> dict:
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations",
                           json={"input": [{"role": "user", "content": "go"}], "custom_inputs": custom})
        assert answer.status_code == 200, answer.text
        return answer.json()["custom_outputs"]

    assert ask(endpoint=declared, client="openai") == {"status": 200, "text": "echo: hello from an agent"}
    assert ask(endpoint=declared, client="deploy") == {"status": 200, "text": "echo: hello from an agent"}
    assert ask(endpoint=undeclared, client="openai")["status"] == 403
    assert ask(endpoint=undeclared, client="deploy")["status"] == 403
    rows = http.get(f"/api/2.0/serving-endpoints/{declared}/inference-table").json()["rows"]
    assert {r["caller"] for r in rows} == {f"system:{endpoint}/{model.replace('.', '-')}_1"}
    http.delete(f"/api/2.0/serving-endpoints/{endpoint}")


def test_the_llm_agent_example_streams_and_traces_its_llm_and_tool_spans(platform, http, llm, provider, people):
    """examples/llm_agent, logged and deployed by its own script with --on-behalf-of: a tool call
    round trip, streamed; its LLM calls go out as the calling user and count against that user's
    own rate limit on the LLM endpoint."""
    llm_endpoint, _model = llm(tool_calls=CALL, after_tool="Here is the weather: {content}")
    alice = people["alice"]
    grant(http, llm_endpoint, alice["name"])
    assert http.put(f"/api/2.0/serving-endpoints/{llm_endpoint}/ai-gateway", json={"rate_limits": [
        {"calls": 4, "key": "user", "principal": alice["name"], "renewal_period": "minute"}]}).status_code == 200
    model = f"main.examples.llm_agent{uuid.uuid4().hex[:6]}"
    script = ROOT / "examples" / "llm_agent" / "log_and_deploy.py"
    done = subprocess.run([sys.executable, str(script), "--llm-endpoint", llm_endpoint, "--name", model, "--on-behalf-of",
                           "--env-manager", "local"],
                          capture_output=True, text=True, env={**os.environ, **platform.client_env()}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    agent = "agents_" + model.replace(".", "-")
    grant(http, agent, alice["name"])
    body = {"input": [{"role": "user", "content": "What is the weather in Oslo?"}]}

    answer = alice["http"].post(f"/serving-endpoints/{agent}/invocations", json=body)
    assert answer.status_code == 200, answer.text
    items = answer.json()["output"]
    assert [i["type"] for i in items] == ["function_call", "function_call_output", "message"]
    assert items[-1]["content"][0]["text"].strip() == "Here is the weather: It is sunny and 21 degrees Celsius in Oslo."
    streamed = alice["http"].post(f"/serving-endpoints/{agent}/invocations", json={**body, "stream": True})
    assert streamed.status_code == 200 and "response.output_text.delta" in streamed.text and "[DONE]" in streamed.text

    # The agent's trace: LLM and TOOL spans nested under the request.
    row = rows_for(http, agent, {answer.headers["x-agentwharf-request-id"]})[answer.headers["x-agentwharf-request-id"]]
    trace = mlflow.get_trace(row["trace_id"])
    spans = {s.span_id: s for s in trace.data.spans}
    [root] = [s for s in spans.values() if s.parent_id is None]

    def under_root(span) -> bool:
        while span.parent_id is not None:
            span = spans[span.parent_id]
        return span is root

    kinds = [s.span_type for s in spans.values() if under_root(s) and s is not root]
    assert kinds.count("LLM") == 2 and kinds.count("TOOL") == 1
    # Each LLM call was alice's (two per question): the fifth is over her limit of four.
    llm_rows = http.get(f"/api/2.0/serving-endpoints/{llm_endpoint}/inference-table").json()["rows"]
    assert {r["caller"] for r in llm_rows} == {alice["name"]}
    third = alice["http"].post(f"/serving-endpoints/{agent}/invocations", json=body)
    assert third.status_code == 500 and "429" in third.text
    http.delete(f"/api/2.0/serving-endpoints/{agent}")


# -- item 5: the guide's judges on a platform LLM endpoint ------------------------------------------


def test_judges_run_on_a_platform_llm_endpoint_through_both_uri_forms(platform, http, provider, made):
    judge, model = "judge", unique("judge-model")  # AGENTWHARF_JUDGE_ENDPOINT names it (conftest)
    provider.script(model, reply=json.dumps({"result": "yes", "rationale": "scripted judge"}))
    http.delete(f"/api/2.0/serving-endpoints/{judge}")
    assert http.post("/api/2.0/serving-endpoints", json={"name": judge, "config": {"served_entities": [
        external(model, provider.api_base)]}}).status_code == 200
    made.append(judge)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DATABRICKS_", "AGENTWHARF_", "OPENAI_"))}
    runs = {
        # MLflow's gateway:/ judges send MLflow's username/password: the token is the password.
        "gateway:/judge": {**base, "MLFLOW_TRACKING_URI": platform.base_url, "MLFLOW_TRACKING_USERNAME": "token",
                           "MLFLOW_TRACKING_PASSWORD": platform.token},
        "databricks:/judge": {**base, "DATABRICKS_HOST": platform.base_url, "DATABRICKS_TOKEN": platform.token,
                              "MLFLOW_TRACKING_URI": platform.base_url, "MLFLOW_TRACKING_USERNAME": "token",
                              "MLFLOW_TRACKING_PASSWORD": platform.token},
    }
    # Both forms at once: each process spends most of its time importing MLflow and waiting on calls.
    started = {}
    for uri, env in runs.items():
        args = [sys.executable, str(Path(__file__).with_name("judge_run.py")), uri]
        if uri.startswith("gateway"):
            args.append("--evaluate")
        started[uri] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        finished = {uri: process.communicate(timeout=600) for uri, process in started.items()}
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    for uri, (stdout, stderr) in finished.items():
        assert started[uri].returncode == 0, stderr[-3000:]
        found = json.loads(stdout.strip().splitlines()[-1])
        for name in ("correctness", "safety", "guidelines", "make_judge"):
            assert found[name]["error"] is None and found[name]["value"].lower() in ("yes", "true"), (uri, name, found[name])
        if "evaluate" in found:
            assert found["evaluate"]["correctness/mean"] == 1.0 and found["evaluate"]["safety/mean"] == 1.0
    rows = http.get(f"/api/2.0/serving-endpoints/{judge}/inference-table", params={"max_results": 1000}).json()["rows"]
    assert len(rows) >= 10 and {r["caller"] for r in rows} == {"admin"} and {r["status_code"] for r in rows} == {200}
    assert {r["route"] for r in rows} == {"chat"}


# -- CLI -----------------------------------------------------------------------------------------


def test_llm_cli_create_list_get_limit_delete(platform, provider, made, tmp_path):
    env = {**os.environ, **platform.client_env(), "PROVIDER_KEY": KEY}
    name, model = unique("cli"), unique("model")

    def run(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentwharf.cli.main", "llm", *args], capture_output=True,
                              text=True, env=env, input=stdin, timeout=120)

    created = run("create", name, "--model", model, "--api-base", provider.api_base, "--api-key-env", "PROVIDER_KEY")
    assert created.returncode == 0, created.stderr
    made.append(name)
    assert f"Created LLM endpoint {name}" in created.stdout and KEY not in created.stdout + created.stderr
    listed = run("list")
    assert name in listed.stdout and f"custom/{model}" in listed.stdout
    assert json.loads(run("get", name, "--json").stdout)["task"] == "llm/v1/chat"
    limited = run("limit", name, "--calls", "7")
    assert limited.returncode == 0 and "7 calls/min per user" in limited.stdout
    missing = run("create", unique("cli"), "--model", "m", "--api-base", provider.api_base, "--api-key-env", "NOT_SET_ANYWHERE")
    assert missing.returncode != 0 and "NOT_SET_ANYWHERE is not set" in missing.stdout + missing.stderr
    assert run("delete", name, "--yes").returncode == 0
    assert name not in run("list").stdout


# -- last: the key never leaks ------------------------------------------------------------------------


def test_the_providers_key_never_leaks(platform, http, llm, provider):
    """A provider that echoes the key it was sent, in answers and in errors, plain and streamed:
    the key is in no answer, and (after everything above) in no file of the home, no log, no
    trace and no inference row; MLflow's database holds it only encrypted."""
    echo, _ = llm(echo_auth=True)
    failing, _ = llm(echo_auth=True, status=401)
    seen = []
    for endpoint, body in ((echo, {"messages": HI}), (echo, {"messages": HI, "stream": True}),
                           (failing, {"messages": HI}), (failing, {"messages": HI, "stream": True})):
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=body)
        seen.append(answer.text)
    assert "[REDACTED]" in seen[0] and "[REDACTED]" in seen[1] and seen[2].count("BAD_GATEWAY") == 1
    assert not any(KEY in text for text in seen)
    for endpoint in (echo, failing):
        for view in (http.get(f"/api/2.0/serving-endpoints/{endpoint}").text,
                     http.get(f"/api/2.0/serving-endpoints/{endpoint}/ai-gateway").text,
                     http.get("/api/3.0/mlflow/gateway/secrets/list").text):
            assert KEY not in view
    time.sleep(2)  # the writer stores within a second
    leaks = []
    for path in [*Path(platform.home).rglob("*"), *Path(platform.home).parent.glob("*-platform.out")]:
        if path.is_file() and KEY.encode() in path.read_bytes():
            leaks.append(str(path))
    assert leaks == []
    rows = http.get(f"/api/2.0/serving-endpoints/{echo}/inference-table").json()["rows"]
    assert rows and all(KEY not in json.dumps(r) for r in rows)
    traces = mlflow.search_traces(locations=[http.get(f"/api/2.0/serving-endpoints/{echo}").json()["experiment_id"]],
                                  return_type="list")
    dumped = "".join(t.to_json() for t in traces)
    assert traces and "[REDACTED]" in dumped and KEY not in dumped


def test_calls_reuse_a_kept_alive_provider_connection_each_sending_its_own_key(http, provider, made):
    """The platform keeps its connections to a provider open between calls (a connection per
    call was most of what it added to a call), and two endpoints with different keys on one
    provider still send each its own key on every call, plain or streamed, whichever
    connection carries it."""
    endpoints = {}
    for key in (KEY, f"sk-aw-other-{uuid.uuid4().hex}"):
        name, model = unique("llm"), unique("model")
        provider.script(model, api_key=key)
        answer = http.post("/api/2.0/serving-endpoints",
                           json={"name": name, "config": {"served_entities": [external(model, provider.api_base, key=key)]}})
        assert answer.status_code == 200, answer.text
        made.append(name)
        endpoints[name] = (model, key)
    for _ in range(3):
        for name in endpoints:
            for body in ({"messages": HI}, {"messages": HI, "stream": True}):
                answer = http.post(f"/serving-endpoints/{name}/invocations", json=body)
                assert answer.status_code == 200, answer.text
                assert answer.text.endswith("data: [DONE]\n\n") if body.get("stream") else \
                    answer.json()["choices"][0]["message"]["content"] == "echo: hello there"
    ports = []
    for model, key in endpoints.values():
        calls = provider.calls(model)
        assert [call["authorization"] for call in calls] == [f"Bearer {key}"] * 6
        ports += [call["client_port"] for call in calls]
    # One call at a time: each finds the connection the one before it left open.
    assert len(ports) == 12 and len(set(ports)) == 1, ports


def test_an_llm_endpoint_survives_a_restart_with_its_key_and_limits(tmp_path, provider):
    """The home keeps what MLflow needs to decrypt the key (its own passphrase, 0600): after a
    restart the endpoint answers with the same key, its limits still hold, its rows are there."""
    from tests.integration.platform_process import PlatformProcess

    own = PlatformProcess(tmp_path / "home", env={"AGENTWHARF_ENV_MANAGER": "local"})
    try:
        own.start()
        headers = own.headers
        name, model = unique("restart"), unique("model")
        body = {"name": name, "config": {"served_entities": [external(model, provider.api_base)]},
                "ai_gateway": {"rate_limits": [{"calls": 1, "key": "endpoint", "renewal_period": "minute"}]}}
        assert httpx.post(f"{own.base_url}/api/2.0/serving-endpoints", json=body, headers=headers, timeout=60).status_code == 200
        first = httpx.post(f"{own.base_url}/serving-endpoints/{name}/invocations", json={"messages": HI}, headers=headers)
        assert first.status_code == 200
        kek = own.home / "secrets" / "mlflow-kek.key"
        assert kek.stat().st_mode & 0o777 == 0o600
        own.stop()
        own.start()
        # A fresh window after the restart (limits live in the gateway's memory), then the limit again.
        again = httpx.post(f"{own.base_url}/serving-endpoints/{name}/invocations", json={"messages": HI}, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["choices"][0]["message"]["content"] == "echo: hello there"
        assert httpx.post(f"{own.base_url}/serving-endpoints/{name}/invocations", json={"messages": HI},
                          headers=headers).status_code == 429
        # The row of the call before the restart: spooled before it was answered, stored by the
        # writer of the restarted platform (which may still be draining the spool).
        def stored() -> bool:
            rows = httpx.get(f"{own.base_url}/api/2.0/serving-endpoints/{name}/inference-table", headers=headers).json()["rows"]
            return first.headers["x-agentwharf-request-id"] in {r["request_id"] for r in rows}

        wait_until(stored, timeout=60, message="the row of the call before the restart")
        assert {c["authorization"] for c in provider.calls(model)} == {f"Bearer {KEY}"}
    finally:
        own.stop()
