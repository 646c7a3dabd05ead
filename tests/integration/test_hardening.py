"""Inputs that used to break the platform (issue 10), each reproduced over real HTTP against the
session's platform: the answer is the one the README promises, the request is recorded, and
the version keeps serving."""

from __future__ import annotations

import os
import resource
import socket
import stat
import time
import uuid
from pathlib import Path

import httpx
import mlflow
import orjson
import pytest

from tests.integration.conftest import deployed_info_agent
from tests.integration.platform_process import wait_until

BODY = {"input": [{"role": "user", "content": "hi"}]}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def served(platform, logged):
    with deployed_info_agent(logged, f"main.tests.hard{uuid.uuid4().hex[:6]}") as deployment:
        yield deployment


@pytest.fixture(scope="module")
def second(platform, http, logged):
    """Another endpoint, and bob: a user with CAN_QUERY on both endpoints and nothing more."""
    with deployed_info_agent(logged, f"main.tests.hard2{uuid.uuid4().hex[:6]}") as deployment:
        yield deployment


@pytest.fixture(scope="module")
def bob(platform, http, served, second):
    name = f"bob-{uuid.uuid4().hex[:6]}"
    assert http.post("/api/2.0/preview/scim/v2/Users", json={"userName": name}).status_code == 200
    token = http.post("/api/2.0/token-management/on-behalf-of/tokens",
                      json={"application_id": name, "lifetime_seconds": 3600}).json()["token_value"]
    for endpoint in (served.endpoint_name, second.endpoint_name):
        granted = http.patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}",
                             json={"access_control_list": [{"user_name": name, "permission_level": "CAN_QUERY"}]})
        assert granted.status_code == 200, granted.text
    with httpx.Client(base_url=platform.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        yield {"name": name, "token": token, "http": client}


def invocations(deployment) -> str:
    return f"/serving-endpoints/{deployment.endpoint_name}/invocations"


def json_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error_code"] == code and body["message"]
    return body


def rows_with_client_id(http, endpoint: str, client_id: str, expected: int) -> list[dict]:
    def fetch():
        rows = http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table",
                        params={"client_request_id": client_id}).json()["rows"]
        return rows if len(rows) >= expected else None

    rows = wait_until(fetch, timeout=30, message=f"{expected} inference rows for {client_id}")
    assert len(rows) == expected
    return rows


def deep(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


# --- 1. one large request no longer disables a version --------------------------------------

@pytest.mark.parametrize("size", [17 * MIB, 70 * MIB])
def test_an_oversized_body_is_413_recorded_and_the_version_keeps_serving(http, served, size):
    client_id = uuid.uuid4().hex
    body = b'{"input": [{"role": "user", "content": "' + b"x" * size + b'"}]}'
    refused = http.post(invocations(served), content=body, headers={"content-type": "application/json",
                                                                     "x-request-id": client_id})
    error = json_error(refused, 413, "INVALID_PARAMETER_VALUE")
    assert "16777216" in error["message"]
    assert http.post(invocations(served), json=BODY).status_code == 200
    [row] = rows_with_client_id(http, served.endpoint_name, client_id, 1)
    assert row["status_code"] == 413 and "limit" in row["request"]
    assert mlflow.get_trace(row["trace_id"]).info.state.value == "ERROR"


def test_headers_past_the_limit_are_431_even_when_a_body_follows(http, served):
    """The header limit counts headers, not the body a client sends right behind them (a busy
    platform may read both in one go); headers that are too large are still refused."""
    too_large = http.post(invocations(served), json=BODY, headers={"x-padding": "p" * (100 * 1024)})
    assert too_large.status_code == 431 and too_large.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    body = b'{"input": [{"role": "user", "content": "' + b"x" * (200 * 1024) + b'"}]}'
    answered = http.post(invocations(served), content=body, headers={"content-type": "application/json"})
    assert answered.status_code == 200, answered.text[:300]


def test_an_oversized_chunked_body_is_refused_once_it_passes_the_limit(http, served):
    def chunks():
        for _ in range(20):
            yield b"y" * MIB

    refused = http.post(invocations(served), content=chunks(), headers={"content-type": "application/json"})
    json_error(refused, 413, "INVALID_PARAMETER_VALUE")
    assert http.post(invocations(served), json=BODY).status_code == 200


def test_a_broken_worker_connection_is_reopened_and_the_version_keeps_serving(http, served):
    pid = http.post(invocations(served), json=BODY).json()["custom_outputs"]["pid"]
    # The agent writes a frame header announcing 2 GiB on its connections to the gateway: the
    # gateway must drop that connection and open a new one to the same, still running, worker.
    poisoned = http.post(invocations(served), json={**BODY, "custom_inputs": {"poison_connection": True}})
    # Its answer was behind the bad frame on the broken connection: the worker is gone to the
    # gateway for that request (503, retry), but not for long.
    json_error(poisoned, 503, "TEMPORARILY_UNAVAILABLE")
    answer = wait_until(lambda: (r := http.post(invocations(served), json=BODY)).status_code == 200 and r,
                        timeout=30, message="the version to answer again")
    assert answer.json()["custom_outputs"]["pid"] == pid  # reconnected, not restarted
    status = http.get(f"/api/2.0/serving-endpoints/{served.endpoint_name}").json()["state"]["ready"]
    assert status == "READY"


# --- 2. every request task answers --------------------------------------------------------------

def test_json_nested_deeper_than_the_record_can_hold_is_a_400_at_once_and_recorded(http, served):
    client_id = uuid.uuid4().hex
    started = time.monotonic()
    answer = http.post(invocations(served), json={**BODY, "custom_inputs": {"deep": deep(300)}},
                       headers={"x-request-id": client_id})
    assert time.monotonic() - started < 10
    assert "nested too deeply" in json_error(answer, 400, "INVALID_PARAMETER_VALUE")["message"]
    [row] = rows_with_client_id(http, served.endpoint_name, client_id, 1)
    assert row["status_code"] == 400
    assert mlflow.get_trace(row["trace_id"]).info.state.value == "ERROR"


def test_an_answer_json_cannot_hold_is_a_500_json_and_recorded(http, served):
    client_id = uuid.uuid4().hex
    answer = http.post(invocations(served), json={**BODY, "custom_inputs": {"deep_output": 300}},
                       headers={"x-request-id": client_id})
    assert "cannot be encoded" in json_error(answer, 500, "MODEL_ERROR")["message"]
    [row] = rows_with_client_id(http, served.endpoint_name, client_id, 1)
    assert row["status_code"] == 500
    assert http.post(invocations(served), json=BODY).status_code == 200


# --- 3. request ids -----------------------------------------------------------------------------

def test_reused_client_request_ids_keep_every_row_and_trace(http, served, second, bob):
    shared = f"reused-{uuid.uuid4().hex[:8]}"
    answers = [http.post(invocations(served), json=BODY, headers={"x-request-id": shared}),
               bob["http"].post(invocations(served), json=BODY, headers={"x-request-id": shared}),
               bob["http"].post(invocations(second), json=BODY, headers={"x-request-id": shared})]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.headers["x-request-id"] for a in answers} == {shared}  # echoed
    own = {a.headers["x-agentwharf-request-id"] for a in answers}
    assert len(own) == 3 and shared not in own
    rows = rows_with_client_id(http, served.endpoint_name, shared, 2) + rows_with_client_id(http, second.endpoint_name, shared, 1)
    assert {r["request_id"] for r in rows} == own
    assert {r["caller"] for r in rows} == {"admin", bob["name"]}
    traces = {mlflow.get_trace(r["trace_id"]).info.trace_metadata["agentwharf.request_id"] for r in rows}
    assert traces == own


# --- 4. traces are bounded --------------------------------------------------------------------

def test_a_10_mb_request_is_stored_cut_and_flagged_never_dropped(http, served):
    client_id = uuid.uuid4().hex
    text = "z" * (10 * MIB)
    answer = http.post(invocations(served), json={"input": [{"role": "user", "content": text}],
                                                 "custom_inputs": {"big_span": 3 * MIB}}, headers={"x-request-id": client_id})
    assert answer.status_code == 200
    [row] = rows_with_client_id(http, served.endpoint_name, client_id, 1)
    assert row["request_truncated"] is True and len(row["request"]) < 2 * MIB
    trace = mlflow.get_trace(row["trace_id"])
    assert "request" in trace.info.trace_metadata["agentwharf.truncated"]
    assert "big_span" in trace.info.trace_metadata["agentwharf.truncated"]
    stored = sum(len(orjson.dumps(span.to_dict(), default=str)) for span in trace.data.spans)
    assert stored < 8 * MIB, stored  # was 40 MB: every copy of the input whole
    root = trace.data.spans[0]
    assert isinstance(root.inputs, str) and root.inputs.startswith('{"input":[{"role":"user","content":"zzz')
    assert "cut by agentwharf" in root.inputs


# --- 5. secrets and file modes ----------------------------------------------------------------

def test_a_token_sent_as_request_id_is_never_stored(platform, http, served, bob):
    answer = bob["http"].post(invocations(served), json=BODY, headers={"x-request-id": bob["token"]})
    assert answer.status_code == 200
    own = answer.headers["x-agentwharf-request-id"]
    row = wait_until(lambda: next((r for r in http.get(f"/api/2.0/serving-endpoints/{served.endpoint_name}/inference-table",
                                                       params={"max_results": 10000}).json()["rows"]
                                   if r["request_id"] == own), None), timeout=30, message="the row")
    assert row["client_request_id"] == "[REDACTED]"
    assert mlflow.get_trace(row["trace_id"]).info.client_request_id == "[REDACTED]"
    secret = bob["token"].encode()
    for folder in ("spool", "logs"):
        for path in (platform.home / folder).rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path
    for name in ("agentwharf.db", "agentwharf.db-wal"):
        if (platform.home / name).exists():
            assert secret not in (platform.home / name).read_bytes()


def test_the_home_is_its_owners_alone(platform, served):
    assert stat.S_IMODE(platform.home.stat().st_mode) == 0o700
    opened = []
    for root, dirs, files in os.walk(platform.home):
        for name in dirs + files:
            path = os.path.join(root, name)
            if not os.path.islink(path) and os.lstat(path).st_mode & 0o077:
                opened.append((path, oct(stat.S_IMODE(os.lstat(path).st_mode))))
    assert opened == []
    assert (platform.home / "agentwharf.db").exists() and (platform.home / "spool").is_dir()


def test_mlflow_telemetry_is_off_in_the_platforms_children(platform, served):
    """MLflow's server, the served version's worker and the spool writer start with MLflow's
    usage telemetry off (AGENTWHARF_MLFLOW_TELEMETRY unset): no process of a self-hosted
    platform calls out to the internet on its own."""
    from tests.integration.load import child_pid

    for marker in (b"agentwharf.platform.mlflow_exec", b"agentwharf.serving.worker", b"agentwharf.tracing.writer"):
        pid = child_pid(platform, marker)
        assert pid is not None, marker
        environment = dict(item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
        assert environment.get(b"MLFLOW_DISABLE_TELEMETRY") == b"true", marker


def test_more_connections_than_debians_default_file_limit_are_served(platform, served):
    """The platform starts with Debian's soft limit of 1024 open files (as the tests start it)
    and accepts AGENTWHARF_MAX_CONNECTIONS (4096): it raises its own limit, so 1,100 open
    connections leave room for one more request, answered at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(4096, hard)), hard))  # this test's own sockets
    with open(f"/proc/{platform.process.pid}/limits") as proc_limits:
        limits = proc_limits.read()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    platform_soft, platform_hard = (int(field) for field in line.split()[3:5])
    assert platform_soft >= min(4096 + 1024, platform_hard), line
    held = []
    try:
        for _ in range(1100):
            held.append(socket.create_connection(("127.0.0.1", platform.port), timeout=5))
        started = time.monotonic()
        answer = httpx.post(f"{platform.base_url}/serving-endpoints/{served.endpoint_name}/invocations",
                            json={"input": [{"role": "user", "content": "one more"}]}, headers=platform.headers, timeout=30)
        assert answer.status_code == 200, answer.text
        assert time.monotonic() - started < 5  # accepted at once, not after the held sockets time out
    finally:
        for sock in held:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# --- 6, 7, 8. what a caller learns about a failed or starting version ---------------------------

def _create(http, endpoint: str, model: str, env: dict[str, str]) -> None:
    created = http.post("/api/2.0/serving-endpoints", json={"name": endpoint, "config": {"served_entities": [
        {"entity_name": model, "entity_version": "1", "workload_size": "Small", "scale_to_zero_enabled": False,
         "environment_vars": env}]}})
    assert created.status_code == 200, created.text


@pytest.fixture(scope="module")
def failed(platform, http, logged, bob, tmp_path_factory):
    """An endpoint whose only version failed to load (its loader reports a secret-looking detail)."""
    marker = tmp_path_factory.mktemp("marker") / "fail"
    marker.write_text("")
    model = f"main.tests.failing{uuid.uuid4().hex[:6]}"
    mlflow.register_model(logged["info"], model)
    endpoint = f"failing-{uuid.uuid4().hex[:6]}"
    _create(http, endpoint, model, {"INFO_AGENT_FAIL_IF": str(marker)})
    wait_until(lambda: http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["state"]["config_update"] == "UPDATE_FAILED",
               timeout=120, message="the update to fail")
    http.patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}",
               json={"access_control_list": [{"user_name": bob["name"], "permission_level": "CAN_QUERY"}]})
    yield endpoint
    http.delete(f"/api/2.0/serving-endpoints/{endpoint}")


def test_a_failed_endpoint_refuses_at_once_without_asking_for_retries(http, failed, bob):
    for client in (http, bob["http"]):
        answer = client.post(f"/serving-endpoints/{failed}/invocations", json=BODY)
        error = json_error(answer, 500, "DEPLOYMENT_FAILED")
        assert "retry-after" not in answer.headers
        assert "UPDATE_FAILED" in error["message"] and "SECRET_DETAIL_42" not in error["message"]


def test_a_failed_endpoint_answers_json_even_to_input_it_cannot_record(http, failed):
    answer = http.post(f"/serving-endpoints/{failed}/invocations", json={**BODY, "custom_inputs": {"deep": deep(300)}})
    json_error(answer, 500, "DEPLOYMENT_FAILED")


def test_the_load_error_is_shown_to_managers_only(http, failed, bob):
    managed = http.get(f"/api/2.0/serving-endpoints/{failed}").json()
    assert "SECRET_DETAIL_42" in managed["state"]["config_update_message"]
    assert managed["permission_level"] == "CAN_MANAGE"
    seen = bob["http"].get(f"/api/2.0/serving-endpoints/{failed}")
    assert seen.status_code == 200
    assert "SECRET_DETAIL_42" not in seen.text and "Traceback" not in seen.text
    assert "CAN_MANAGE" in seen.json()["state"]["config_update_message"]
    assert seen.json()["permission_level"] == "CAN_QUERY"
    listed = {e["name"]: e for e in bob["http"].get("/api/2.0/serving-endpoints").json()["endpoints"]}
    assert listed[failed]["permission_level"] == "CAN_QUERY"
    assert "SECRET_DETAIL_42" not in bob["http"].get("/api/2.0/serving-endpoints").text


def test_a_request_to_an_endpoint_still_loading_waits_and_is_answered(http, logged):
    model = f"main.tests.slow{uuid.uuid4().hex[:6]}"
    mlflow.register_model(logged["info"], model)
    endpoint = f"slow-{uuid.uuid4().hex[:6]}"
    _create(http, endpoint, model, {"INFO_AGENT_LOAD_DELAY": "4"})
    try:
        assert http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["state"]["ready"] == "NOT_READY"
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=BODY)
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"][0]["content"][0]["text"] == "Echo: hi"
    finally:
        http.delete(f"/api/2.0/serving-endpoints/{endpoint}")
