"""Every served request is an MLflow trace in the endpoint's experiment and one inference-table
row, read back through MLflow's own client and the platform's REST API."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid

import httpx
import mlflow
import openai
import pytest

from tests.integration.conftest import deployed_info_agent, rows_for
from tests.integration.platform_process import wait_until


@pytest.fixture(scope="module")
def traced(platform, logged):
    with deployed_info_agent(logged, "main.tests.traced") as deployment:
        yield deployment


def send(http, endpoint, body, **headers):
    """Send with a client request id of our own; returns the platform's id of the request."""
    client_id = uuid.uuid4().hex
    answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=body, headers={"x-request-id": client_id, **headers})
    assert answer.headers["x-request-id"] == client_id  # echoed
    request_id = answer.headers["x-agentwharf-request-id"]
    assert request_id != client_id
    return request_id, answer


def trace_of(row):
    return mlflow.get_trace(row["trace_id"])


def test_plain_request_is_a_trace_with_the_agent_span_nested(http, traced):
    request_id, answer = send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "trace me"}],
                                                            "context": {"conversation_id": "conv-7", "user_id": "ada"}})
    assert answer.status_code == 200
    row = rows_for(http, traced.endpoint_name, {request_id})[request_id]
    trace = trace_of(row)
    root, *children = trace.data.spans
    assert root.parent_id is None and root.name == f"/serving-endpoints/{traced.endpoint_name}/invocations"
    assert [c.name for c in children] == ["predict"] and children[0].parent_id == root.span_id
    assert root.outputs["output"][0]["content"][0]["text"] == "Echo: trace me"
    meta = trace.info.trace_metadata
    assert meta["agentwharf.endpoint"] == traced.endpoint_name
    assert meta["agentwharf.served_entity"] == traced.served_entity_name
    assert meta["agentwharf.model_name"] == traced.model_name and meta["agentwharf.model_version"] == "1"
    assert meta["agentwharf.request_id"] == request_id and meta["agentwharf.status_code"] == "200"
    assert meta["mlflow.trace.session"] == "conv-7" and meta["mlflow.trace.user"] == "ada"
    client_id = answer.headers["x-request-id"]
    assert trace.info.client_request_id == client_id and meta["agentwharf.client_request_id"] == client_id
    assert row["client_request_id"] == client_id
    assert trace.info.experiment_id == http.get(f"/api/2.0/serving-endpoints/{traced.endpoint_name}").json()["experiment_id"]
    # And MLflow's search finds it in the endpoint's experiment.
    found = mlflow.search_traces(locations=[trace.info.experiment_id], return_type="list", max_results=500)
    assert row["trace_id"] in {t.info.trace_id for t in found}


def test_trace_and_request_ids_are_time_ordered(http, traced):
    """The worker's MLflow trace ids and the gateway's request ids carry the time in their high
    bits (so the store appends to its indexes); MLflow reads the trace back under the same id."""
    ids, rows = [], {}
    for n in range(2):
        before = time.time_ns() // 1_000_000
        request_id, answer = send(http, traced.endpoint_name, {"input": [{"role": "user", "content": f"t{n}"}]})
        after = time.time_ns() // 1_000_000
        assert answer.status_code == 200
        assert uuid.UUID(hex=request_id).version == 7 and before <= int(request_id[:12], 16) <= after
        row = rows[request_id] = rows_for(http, traced.endpoint_name, {request_id})[request_id]
        trace = trace_of(row)
        # The agent's own span ("predict") was made under the worker's MLflow tracer, so the id is its.
        assert [s.name for s in trace.data.spans][1:] == ["predict"]
        assert re.fullmatch(r"tr-[0-9a-f]{32}", row["trace_id"]) and trace.info.trace_id == row["trace_id"]
        assert before <= int(row["trace_id"][3:], 16) >> 80 <= after
        ids.append((request_id, row["trace_id"]))
        time.sleep(0.002)
    (first_request, first_trace), (second_request, second_trace) = ids
    assert first_request < second_request and first_trace < second_trace


def test_streamed_request_records_the_assembled_output(http, traced):
    request_id, answer = send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "s"}], "stream": True,
                                                            "custom_inputs": {"events": 3}})
    assert answer.status_code == 200
    row = rows_for(http, traced.endpoint_name, {request_id})[request_id]
    assert row["stream"] is True and row["status_code"] == 200
    assert json.loads(row["response"])["output"][0]["content"][0]["text"] == "Echo: s"
    spans = trace_of(row).data.spans
    assert [s.name for s in spans][:2] == [f"/serving-endpoints/{traced.endpoint_name}/invocations", "predict_stream"]


def test_agent_error_is_an_error_trace_and_row(http, traced):
    request_id, answer = send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "x"}],
                                                            "custom_inputs": {"raise": "kaboom"}})
    assert answer.status_code == 500
    row = rows_for(http, traced.endpoint_name, {request_id})[request_id]
    assert row["status_code"] == 500 and row["error"] == "ValueError: kaboom"
    trace = trace_of(row)
    assert trace.info.state.value == "ERROR"
    assert trace.info.trace_metadata["agentwharf.status_code"] == "500"


def test_gateway_rejections_on_a_known_endpoint_are_recorded(http, traced):
    answer = http.post(f"/serving-endpoints/{traced.endpoint_name}/invocations", content=b"x=1",
                       headers={"content-type": "text/plain"})
    assert answer.status_code == 415
    request_id = answer.headers["x-agentwharf-request-id"]
    assert answer.headers["x-request-id"] == request_id  # no id of the client's: the platform's
    bad_id, bad = send(http, traced.endpoint_name, {"input": 42})
    assert bad.status_code == 400
    rows = rows_for(http, traced.endpoint_name, {request_id, bad_id})
    assert rows[request_id]["status_code"] == 415 and rows[bad_id]["status_code"] == 400
    assert trace_of(rows[bad_id]).info.state.value == "ERROR"


def test_openai_route_is_traced(platform, http, traced):
    client = openai.OpenAI(base_url=f"{platform.base_url}/serving-endpoints", api_key=platform.token)
    raw = client.responses.with_raw_response.create(model=traced.endpoint_name, input="via openai")
    request_id = raw.headers["x-request-id"]
    row = rows_for(http, traced.endpoint_name, {request_id})[request_id]
    assert row["route"] == "responses"
    assert trace_of(row).data.spans[0].outputs["output"][0]["content"][0]["text"] == "Echo: via openai"


def test_return_trace_includes_the_trace_in_the_response(http, traced):
    _, answer = send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "x"}],
                                                  "databricks_options": {"return_trace": True}})
    trace = answer.json()["databricks_output"]["trace"]
    assert trace["info"]["trace_id"].startswith("tr-")
    assert [s["name"] for s in trace["data"]["spans"]][1] == "predict"


def test_rows_match_requests_one_to_one(http, traced):
    sent = {}
    for i in range(40):
        body = {"input": [{"role": "user", "content": f"n{i}"}]} if i % 4 else {"input": [{"role": "user", "content": f"n{i}"}], "stream": True}
        request_id, answer = send(http, traced.endpoint_name, body)
        sent[request_id] = answer.status_code
    rows = rows_for(http, traced.endpoint_name, set(sent))
    assert {rid: r["status_code"] for rid, r in rows.items()} == sent
    trace_ids = [r["trace_id"] for r in rows.values()]
    assert len(set(trace_ids)) == len(sent)  # one trace per request, none shared


def test_inference_table_filters_and_paging(http, traced):
    ids = {send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "p"}]})[0] for _ in range(5)}
    rows = rows_for(http, traced.endpoint_name, ids)
    first = min(r["timestamp_ms"] for r in rows.values())
    paged, token = [], None
    while True:
        params = {"since": first, "max_results": 2, "status": "200"} | ({"page_token": token} if token else {})
        page = http.get(f"/api/2.0/serving-endpoints/{traced.endpoint_name}/inference-table", params=params).json()
        assert len(page["rows"]) <= 2
        paged += page["rows"]
        token = page.get("next_page_token")
        if not token:
            break
    assert ids <= {r["request_id"] for r in paged}
    assert all(r["status_code"] == 200 and r["timestamp_ms"] >= first for r in paged)
    errors = http.get(f"/api/2.0/serving-endpoints/{traced.endpoint_name}/inference-table", params={"status": "error"}).json()["rows"]
    assert all(r["status_code"] >= 400 for r in errors)
    bad = http.get(f"/api/2.0/serving-endpoints/{traced.endpoint_name}/inference-table", params={"since": "yesterday"})
    assert bad.status_code == 400 and "since" in bad.json()["message"]
    missing = http.get("/api/2.0/serving-endpoints/never-existed/inference-table")
    assert missing.status_code == 404


def test_export_formats_round_trip(platform, http, traced, tmp_path):
    from tests.integration.test_restart_and_cli import cli

    ids = {send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "export, \"quoted\"\nline"}]})[0] for _ in range(3)}
    expected = rows_for(http, traced.endpoint_name, ids)

    jsonl = cli(platform.base_url, "inference", "export", traced.endpoint_name, "--format", "jsonl", check=True)
    from_jsonl = {r["request_id"]: r for r in map(json.loads, jsonl.stdout.splitlines())}
    assert "rows of" in jsonl.stderr
    from_csv = {r["request_id"]: r for r in csv.DictReader(io.StringIO(
        cli(platform.base_url, "inference", "export", traced.endpoint_name, "--format", "csv", check=True).stdout))}
    cli(platform.base_url, "inference", "export", traced.endpoint_name, "-f", "parquet", "-o", str(tmp_path / "t.parquet"), check=True)
    import pyarrow.parquet as pq

    from_parquet = {r["request_id"]: r for r in pq.read_table(tmp_path / "t.parquet").to_pylist()}
    for request_id, row in expected.items():
        assert from_jsonl[request_id] == row
        assert from_parquet[request_id] == row
        assert from_csv[request_id]["request"] == row["request"]
        assert int(from_csv[request_id]["status_code"]) == row["status_code"]
    assert len(from_jsonl) == len(from_parquet) == len(from_csv)


def test_metrics_an_operator_can_use(platform, http, traced):
    from prometheus_client.parser import text_string_to_metric_families

    send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "m"}]})
    send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "m"}], "stream": True})
    answer = http.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    ours = {"endpoint": traced.endpoint_name, "served_entity": traced.served_entity_name}

    def value(name, **labels):
        return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("agentwharf_requests_total", **ours, status="200") >= 2
    assert value("agentwharf_request_duration_seconds_count", **ours) >= 2
    assert value("agentwharf_stream_first_event_seconds_count", **ours) >= 1
    assert any(s.labels == ours for s in samples["agentwharf_requests_in_flight"])
    assert value("agentwharf_worker_resident_memory_bytes", **ours) > 10 * 1024 * 1024
    assert value("agentwharf_environment_builds_total") >= 1
    for name in ("agentwharf_spool_pending_bytes", "agentwharf_spool_writer_lag_seconds", "agentwharf_spool_records_total",
                 "agentwharf_worker_restarts_total", "agentwharf_served_versions", "process_resident_memory_bytes"):
        assert name in samples, name
    assert httpx.get(f"{platform.base_url}/metrics").status_code == 401  # a token is needed (a scrape token: README)


def test_every_request_has_an_access_line(platform, http, traced):
    request_id, _ = send(http, traced.endpoint_name, {"input": [{"role": "user", "content": "logged"}]})
    path = f"/serving-endpoints/{traced.endpoint_name}/invocations"
    log = platform.home / "logs" / "platform.log"
    line = wait_until(lambda: next((ln for ln in log.read_text().splitlines() if f"request={request_id}" in ln), None),
                      timeout=10, message="the access line")
    assert f"agentwharf.access: POST {path} 200 " in line and "caller=admin" in line
