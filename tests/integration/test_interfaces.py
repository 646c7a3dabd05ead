"""Every model interface the guide names, deployed and queried over real HTTP (issue 19).

The examples, logged and registered by their own ``log_and_deploy.py``: a ChatAgent
(``examples/chat_agent``), a ChatModel (``examples/chat_model``) and a plain pyfunc model with a
signature (``examples/pyfunc``), each queried in its own shape on ``invocations`` and through
the OpenAI routes, plain and streamed, with requests of the wrong shape, and with what holds
for ResponsesAgent (traces, rows, auth, on-behalf-of credentials, ``return_trace``, Databricks'
clients). The ResponsesAgent cells are in test_gateway.py.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import uuid
from pathlib import Path

import httpx
import mlflow
import openai
import pytest
from mlflow.models.auth_policy import AuthPolicy, UserAuthPolicy

from agentwharf import agents
from tests.integration.client_venvs import SDK_PACKAGES, client_venv
from tests.integration.conftest import AGENTS, rows_for, sse_events
from tests.integration.platform_process import wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = {"chat_agent": "chat_agent", "chat_model": "chat_model", "pyfunc": "pyfunc"}
HI = [{"role": "user", "content": "hi there"}]
ROWS = [{"quantity": 2, "unit_price": 3.5}, {"quantity": 1, "unit_price": 10.0}]
PRICED = {"predictions": [{"total": 7.0}, {"total": 10.0}]}


def _deploy(http: httpx.Client, model: str, version: str) -> str:
    deployed = http.post("/api/2.0/agents/deployments:deploy", json={"model_name": model, "model_version": version})
    assert deployed.status_code == 200, deployed.text
    return deployed.json()["deployed_chain"]["endpoint_name"]


def _wait_ready(http: httpx.Client, endpoint: str) -> None:
    wait_until(lambda: http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["state"]["ready"] == "READY",
               timeout=180, message=f"{endpoint} to be ready")


@pytest.fixture(scope="module")
def endpoints(platform, http) -> dict[str, str]:
    """The three examples, logged by their own scripts, and the chat relay (a ChatModel with an
    on-behalf-of policy), each deployed; deployments overlap, then all are waited for."""
    suffix = uuid.uuid4().hex[:6]
    mlflow.set_experiment("/tests/interfaces")
    names = {}
    for kind, folder in SCRIPTS.items():
        log_and_register = runpy.run_path(str(EXAMPLES / folder / "log_and_deploy.py"))["log_and_register"]
        model = f"main.interfaces.{kind}{suffix}"
        names[kind] = _deploy(http, model, log_and_register(model))
    policy = AuthPolicy(user_auth_policy=UserAuthPolicy(api_scopes=["serving.serving-endpoints"]))
    with mlflow.start_run():
        relay = mlflow.pyfunc.log_model(name="relay", python_model=str(AGENTS / "chat_relay_model.py"),
                                        pip_requirements=["mlflow", "httpx"], auth_policy=policy)
    model = f"main.interfaces.relay{suffix}"
    names["relay"] = _deploy(http, model, mlflow.register_model(relay.model_uri, model).version)
    for endpoint in names.values():
        _wait_ready(http, endpoint)
    yield names
    for kind in names:
        agents.delete_deployment(f"main.interfaces.{kind}{suffix}")


@pytest.fixture(scope="module")
def oai(platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/serving-endpoints", api_key=platform.token, max_retries=0)


def invoke(http: httpx.Client, endpoint: str, body: dict) -> httpx.Response:
    return http.post(f"/serving-endpoints/{endpoint}/invocations", json=body)


def streamed(http: httpx.Client, endpoint: str, body: dict) -> list[dict]:
    answer = invoke(http, endpoint, {**body, "stream": True})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    events = sse_events(answer)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def error_of(answer: httpx.Response, status: int = 400, code: str = "INVALID_PARAMETER_VALUE") -> str:
    assert answer.status_code == status, answer.text
    assert answer.json()["error_code"] == code and "Traceback" not in answer.text
    return answer.json()["message"]


# -- ChatAgent -------------------------------------------------------------------------------


def test_chat_agent_invocations_take_messages_context_and_custom_inputs(http, endpoints):
    answer = invoke(http, endpoints["chat_agent"], {"messages": HI, "context": {"conversation_id": "c1", "user_id": "u1"},
                                                    "custom_inputs": {"k": 1}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"messages", "custom_outputs"}
    assert [(m["role"], m["content"]) for m in body["messages"]] == [("assistant", "Echo: hi there")]
    assert body["custom_outputs"] == {"conversation_id": "c1", "custom_inputs": {"k": 1}}


def test_chat_agent_invocations_stream_chat_agent_chunks(http, endpoints):
    chunks = streamed(http, endpoints["chat_agent"], {"messages": HI, "custom_inputs": {"k": 2}})
    assert [c["delta"]["content"] for c in chunks] == ["Echo:", " hi", " there"]
    assert len({c["delta"]["id"] for c in chunks}) == 1 and {c["delta"]["role"] for c in chunks} == {"assistant"}
    assert chunks[-1]["custom_outputs"]["custom_inputs"] == {"k": 2}


def test_chat_agent_through_openai_chat_completions(endpoints, oai):
    completion = oai.chat.completions.create(model=endpoints["chat_agent"], messages=HI,
                                             extra_body={"context": {"conversation_id": "c2"}, "custom_inputs": {"k": 3}})
    assert completion.object == "chat.completion" and completion.model == endpoints["chat_agent"]
    assert completion.choices[0].message.content == "Echo: hi there" and completion.choices[0].finish_reason == "stop"
    assert completion.model_extra["custom_outputs"] == {"conversation_id": "c2", "custom_inputs": {"k": 3}}
    chunks = list(oai.chat.completions.create(model=endpoints["chat_agent"], messages=HI, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hi there"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_agent_through_openai_responses(endpoints, oai):
    response = oai.responses.create(model=endpoints["chat_agent"], input="from responses", instructions="be brief",
                                    extra_body={"custom_inputs": {"k": 4}})
    assert response.output_text == "Echo: from responses"
    assert response.model_extra["custom_outputs"]["custom_inputs"] == {"k": 4}
    events = list(oai.responses.create(model=endpoints["chat_agent"], input=[{"role": "user", "content": "s"}], stream=True))
    types = [e.type for e in events]
    assert types == ["response.created", "response.output_text.delta", "response.output_text.delta",
                     "response.output_item.done", "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Echo: s"
    assert events[-1].response.output[0].content[0].text == "Echo: s"


def test_chat_agent_error_is_a_500_and_ends_a_stream_with_an_error(http, endpoints):
    no_user = {"messages": [{"role": "system", "content": "nobody asked"}]}
    message = error_of(invoke(http, endpoints["chat_agent"], no_user), 500, "MODEL_ERROR")
    assert message == "ValueError: there is no user message to answer"
    events = sse_events(invoke(http, endpoints["chat_agent"], {**no_user, "stream": True}))
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2]) == {"error_code": "MODEL_ERROR", "message": message}


# -- ChatModel -------------------------------------------------------------------------------


def test_chat_model_invocations_answer_a_chat_completion(http, endpoints):
    answer = invoke(http, endpoints["chat_model"], {"messages": HI, "temperature": 0, "max_tokens": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "chat.completion"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Echo: hi"}, "finish_reason": "length"}]
    assert body["usage"]["completion_tokens"] == 2
    chunks = streamed(http, endpoints["chat_model"], {"messages": HI})
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: hi there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_model_through_openai_chat_completions(endpoints, oai):
    completion = oai.chat.completions.create(model=endpoints["chat_model"], messages=HI, temperature=1, max_tokens=1)
    assert completion.choices[0].message.content == "Echo:" and completion.choices[0].finish_reason == "length"
    assert completion.id and completion.usage.total_tokens == 2
    chunks = list(oai.chat.completions.create(model=endpoints["chat_model"], messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Echo: hi there"
    assert len({c.id for c in chunks}) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_chat_model_on_the_responses_route_is_a_400_naming_chat_completions(http, endpoints, stream):
    answer = http.post("/serving-endpoints/responses", json={"model": endpoints["chat_model"], "input": "x", "stream": stream})
    message = error_of(answer)
    assert "cannot reach this endpoint's model, a ChatModel" in message and "/serving-endpoints/chat/completions" in message


# -- plain pyfunc ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["quantity", "unit_price"], "data": [[2, 3.5], [1, 10.0]]}},
    {"dataframe_records": ROWS},
    {"instances": ROWS},
    {"inputs": {"quantity": [2, 1], "unit_price": [3.5, 10.0]}},
], ids=["dataframe_split", "dataframe_records", "instances", "inputs"])
def test_pyfunc_invocations_in_every_scoring_format(http, endpoints, body):
    answer = invoke(http, endpoints["pyfunc"], body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == PRICED


def test_pyfunc_params_reach_the_model(http, endpoints):
    answer = invoke(http, endpoints["pyfunc"], {"dataframe_records": ROWS, "params": {"discount": 0.5}})
    assert answer.json() == {"predictions": [{"total": 3.5}, {"total": 5.0}]}


def test_pyfunc_stream_is_a_400(http, endpoints):
    message = error_of(invoke(http, endpoints["pyfunc"], {"dataframe_records": ROWS, "stream": True}))
    assert "does not implement predict_stream" in message


@pytest.mark.parametrize("route, body", [
    ("responses", {"input": "x"}), ("responses", {"input": "x", "stream": True}),
    ("chat/completions", {"messages": HI}), ("chat/completions", {"messages": HI, "stream": True}),
])
def test_pyfunc_on_the_openai_routes_is_a_400_naming_invocations(http, endpoints, route, body):
    message = error_of(http.post(f"/serving-endpoints/{route}", json={"model": endpoints["pyfunc"], **body}))
    assert "cannot reach this endpoint's model, a pyfunc model" in message
    assert "POST /serving-endpoints/{name}/invocations" in message


# -- requests of another interface's shape -----------------------------------------------------


@pytest.mark.parametrize("kind, body, fragments", [
    ("chat_agent", {"input": HI}, ["'messages' is required", '{"messages": [', "/serving-endpoints/responses"]),
    ("chat_agent", {"dataframe_records": ROWS}, ["'messages' is required", "MLflow's scoring protocol"]),
    ("chat_agent", {"messages": [{"content": "no role"}]}, ["messages.0.role: Field required"]),
    ("chat_model", {"input": HI}, ["'messages' is required", "chat completions request", "does not take"]),
    ("chat_model", {"messages": HI, "max_tokens": "many"}, ["`max_tokens` must be of type int"]),
    ("pyfunc", {"messages": HI}, ["'quantity': long (required)", "chat request ('messages')", "does not take"]),
    ("pyfunc", {"input": HI}, ["Model is missing inputs", "Responses request ('input')"]),
    ("pyfunc", {"dataframe_records": [{"quantity": "two", "unit_price": 1.0}]}, ["quantity", "'int64'"]),
    ("pyfunc", {"rows": ROWS}, ["exactly one of the input fields", '"dataframe_split"']),
], ids=lambda value: value if isinstance(value, str) else None)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_request_of_the_wrong_shape_is_a_400_naming_the_expected_one(http, endpoints, kind, body, fragments, stream):
    if stream and kind == "pyfunc":
        body = {**body, "stream": True}  # refused for streaming before its shape is looked at
        fragments = ["does not implement predict_stream"]
    elif stream:
        body = {**body, "stream": True}
    message = error_of(invoke(http, endpoints[kind], body))
    assert all(fragment in message for fragment in fragments), message


# -- what holds for every interface ------------------------------------------------------------

#: Per interface: a plain request, the model's spans under the request's, the recorded answer.
TRACED = {
    "chat_agent": ({"messages": HI, "context": {"conversation_id": "conv-ca", "user_id": "ada"}},
                   ["predict", "compose_reply"], ["predict_stream", "compose_reply"],
                   lambda response: response["messages"][0]["content"] == "Echo: hi there"),
    "chat_model": ({"messages": HI}, ["predict", "compose_reply"], ["predict_stream", "compose_reply"],
                   lambda response: response["choices"][0]["message"]["content"] == "Echo: hi there"),
    "pyfunc": ({"dataframe_records": ROWS}, ["predict", "price"], None, lambda response: response == PRICED),
}


def _send(http, endpoint, body) -> tuple[str, httpx.Response]:
    answer = invoke(http, endpoint, body)
    return answer.headers["x-agentwharf-request-id"], answer


def _spans_under_root(trace) -> list[str]:
    """The trace's span names, root first, checking each model span hangs off the one before."""
    root, *spans = trace.data.spans
    assert root.parent_id is None
    parents = [root.span_id] + [s.span_id for s in spans]
    assert [s.parent_id for s in spans] == parents[:-1], "the model's spans nest, under the request's"
    return [root.name] + [s.name for s in spans]


@pytest.mark.parametrize("kind", list(TRACED))
def test_each_request_is_one_trace_with_the_models_spans_nested_and_one_row(http, endpoints, kind):
    body, spans, stream_spans, answered = TRACED[kind]
    endpoint = endpoints[kind]
    plain_id, plain = _send(http, endpoint, body)
    assert plain.status_code == 200, plain.text
    ids = {plain_id}
    if stream_spans:
        stream_id, streaming = _send(http, endpoint, {**body, "stream": True})
        assert streaming.status_code == 200
        ids.add(stream_id)
    rows = rows_for(http, endpoint, ids)
    row = rows[plain_id]
    assert row["status_code"] == 200 and row["stream"] is False and answered(json.loads(row["response"]))
    trace = mlflow.get_trace(row["trace_id"])
    assert _spans_under_root(trace) == [f"/serving-endpoints/{endpoint}/invocations", *spans]
    assert trace.info.trace_metadata["agentwharf.request_id"] == plain_id
    if kind == "chat_agent":  # a ChatAgent's context is the trace's session and user, as a ResponsesAgent's is
        assert trace.info.trace_metadata["mlflow.trace.session"] == "conv-ca"
        assert trace.info.trace_metadata["mlflow.trace.user"] == "ada"
    if stream_spans:
        row = rows[stream_id]
        assert row["stream"] is True and answered(json.loads(row["response"]))  # the assembled stream
        assert _spans_under_root(mlflow.get_trace(row["trace_id"]))[1:] == stream_spans


def test_refused_failed_and_openai_route_requests_are_recorded(http, endpoints, oai):
    bad_id, bad = _send(http, endpoints["chat_agent"], {"input": HI})
    failed_id, failed = _send(http, endpoints["chat_agent"], {"messages": [{"role": "system", "content": "x"}]})
    wrong_id, wrong = _send(http, endpoints["pyfunc"], {"messages": HI})
    assert (bad.status_code, failed.status_code, wrong.status_code) == (400, 500, 400)
    raw = oai.chat.completions.with_raw_response.create(model=endpoints["chat_agent"], messages=HI)
    chat_id = raw.headers["x-agentwharf-request-id"]
    rows = rows_for(http, endpoints["chat_agent"], {bad_id, failed_id, chat_id})
    assert rows[bad_id]["status_code"] == 400 and "'messages' is required" in rows[bad_id]["error"]
    assert rows[failed_id]["status_code"] == 500 and rows[failed_id]["error"] == "ValueError: there is no user message to answer"
    assert mlflow.get_trace(rows[failed_id]["trace_id"]).info.state.value == "ERROR"
    assert rows[chat_id]["route"] == "chat" and json.loads(rows[chat_id]["request"])["messages"] == HI
    assert rows_for(http, endpoints["pyfunc"], {wrong_id})[wrong_id]["status_code"] == 400


@pytest.mark.parametrize("kind", list(TRACED))
def test_return_trace_carries_the_models_spans(http, endpoints, kind):
    body, spans, _, _ = TRACED[kind]
    answer = invoke(http, endpoints[kind], {**body, "databricks_options": {"return_trace": True}})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    trace = result.pop("databricks_output")["trace"]
    assert [s["name"] for s in trace["data"]["spans"]][1:] == spans
    assert trace["info"]["trace_id"].startswith("tr-")
    assert TRACED[kind][3](result)  # the answer itself is unchanged


def _person(platform, http) -> tuple[str, httpx.Client]:
    name = f"carol-{uuid.uuid4().hex[:6]}"
    assert http.post("/api/2.0/preview/scim/v2/Users", json={"userName": name}).status_code == 200
    token = http.post("/api/2.0/token-management/on-behalf-of/tokens",
                      json={"application_id": name, "lifetime_seconds": 3600}).json()["token_value"]
    return name, httpx.Client(base_url=platform.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"})


def _grant(http, endpoint: str, user: str) -> None:
    granted = http.patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}",
                         json={"access_control_list": [{"user_name": user, "permission_level": "CAN_QUERY"}]})
    assert granted.status_code == 200, granted.text


def test_every_interface_and_route_needs_can_query(platform, http, endpoints):
    name, carol = _person(platform, http)
    with carol:
        requests = [(f"/serving-endpoints/{endpoints['chat_agent']}/invocations", {"messages": HI}),
                    ("/serving-endpoints/chat/completions", {"model": endpoints["chat_agent"], "messages": HI}),
                    ("/serving-endpoints/responses", {"model": endpoints["chat_agent"], "input": "x"}),
                    ("/serving-endpoints/chat/completions", {"model": endpoints["chat_model"], "messages": HI}),
                    (f"/serving-endpoints/{endpoints['pyfunc']}/invocations", {"dataframe_records": ROWS})]
        for path, body in requests:
            error_of(carol.post(path, json=body), 403, "PERMISSION_DENIED")
        for kind in ("chat_agent", "chat_model", "pyfunc"):
            _grant(http, endpoints[kind], name)
        for path, body in requests:
            assert carol.post(path, json=body).status_code == 200, path


def test_on_behalf_of_credentials_reach_a_chat_model_plain_and_streamed(platform, http, endpoints):
    relay = {"messages": [{"role": "user", "content": "relayed"}], "custom_inputs": {"target": endpoints["chat_agent"]}}

    def relayed(client: httpx.Client) -> tuple[str, str]:
        plain = invoke(client, endpoints["relay"], relay)
        assert plain.status_code == 200, plain.text
        chunks = streamed(client, endpoints["relay"], relay)
        return plain.json()["choices"][0]["message"]["content"], chunks[0]["choices"][0]["delta"]["content"]

    # The admin may query the ChatAgent: on the admin's behalf, so may the relay.
    assert relayed(http) == ("Echo: relayed", "Echo: relayed")
    # dave may query the relay but not its target: on his behalf, the relay cannot either.
    name, dave = _person(platform, http)
    with dave:
        _grant(http, endpoints["relay"], name)
        assert relayed(dave) == ("refused with 403", "refused with 403")


def test_mlflow_databricks_deployments_client_for_every_interface(platform, endpoints, monkeypatch):
    from mlflow.deployments import get_deploy_client

    monkeypatch.setenv("DATABRICKS_HOST", platform.base_url)
    monkeypatch.setenv("DATABRICKS_TOKEN", platform.token)
    client = get_deploy_client("databricks")
    chat_agent = client.predict(endpoint=endpoints["chat_agent"], inputs={"messages": HI})
    assert chat_agent["messages"][0]["content"] == "Echo: hi there"
    chunks = list(client.predict_stream(endpoint=endpoints["chat_agent"], inputs={"messages": HI}))
    assert "".join(c["delta"]["content"] for c in chunks) == "Echo: hi there"
    chat_model = client.predict(endpoint=endpoints["chat_model"], inputs={"messages": HI, "max_tokens": 2})
    assert chat_model["choices"][0]["message"]["content"] == "Echo: hi"
    chunks = list(client.predict_stream(endpoint=endpoints["chat_model"], inputs={"messages": HI}))
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: hi there"
    assert client.predict(endpoint=endpoints["pyfunc"], inputs={"dataframe_records": ROWS}) == PRICED


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    return client_venv(".venv-databricks", SDK_PACKAGES)


def test_databricks_sdk_queries_every_interface(platform, endpoints, sdk_python):
    env = {**os.environ, "DATABRICKS_HOST": platform.base_url, "DATABRICKS_TOKEN": platform.token}
    script = Path(__file__).parent / "databricks" / "sdk_interfaces.py"
    result = subprocess.run([str(sdk_python), str(script), endpoints["chat_agent"], endpoints["chat_model"], endpoints["pyfunc"]],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["chat_agent_raw"] == "Echo: from the sdk"
    assert seen["chat_agent_openai"] == "Echo: sdk chat" and seen["chat_agent_openai_stream"] == "Echo: sdk stream"
    assert seen["chat_agent_responses"] == "Echo: sdk responses"
    assert seen["chat_model"] == ["Echo: from", 0]
    assert seen["chat_model_openai_stream"] == "Echo: sdk stream"
    assert seen["pyfunc_records"] == seen["pyfunc_split"] == [{"total": 7.0}, {"total": 10.0}]
