"""agentwharf.tracing.rows: a spooled record as MLflow trace rows and an inference-table row."""

import base64
import subprocess
import sys
import time

import orjson

from agentwharf.tracing import record, rows
from agentwharf.tracing.recorder import header as make_header

ARTIFACTS = "/data/artifacts/7/"


def header(**overrides):
    values = dict(request_id="req-1", endpoint="ep", experiment_id="7", entity="ent_1", model=("main.m", "3"),
                  status_code=200, started=time.perf_counter(), caller="ada@example.com", route="invocations", stream=False)
    values.update(overrides)
    return make_header(**values)


def child_span(built: dict, name: str, parent_b64: str, span_id: int) -> dict:
    return {
        "trace_id": built["spans"][0]["trace_id"],
        "span_id": base64.b64encode(span_id.to_bytes(8, "big")).decode(),
        "parent_span_id": parent_b64,
        "name": name,
        "start_time_unix_nano": 1,
        "end_time_unix_nano": 2,
        "events": [],
        "status": {"code": "STATUS_CODE_UNSET", "message": ""},
        "attributes": {"mlflow.spanType": '"LLM"'},
        "links": [],
    }


def built_record(inputs=None, outputs=None, error=None):
    if inputs is None:
        inputs = {"input": [{"role": "user", "content": "hi"}], "context": {"conversation_id": "conv-7", "user_id": "ada"}}
    built = record.build(name="/serving-endpoints/ep/invocations", start_ns=time.time_ns() - 2_000_000,
                         inputs=inputs, outputs=outputs if outputs is not None or error else {"output": "hello"}, error=error)
    root = built["spans"][0]
    child = child_span(built, "agent", root["span_id"], 0x0123456789ABCDEF)
    built["spans"].append(child)
    built["spans"].append(child_span(built, "tool", child["span_id"], 0xFEDCBA9876543210))
    return built


def metadata_of(result):
    return {r["key"]: r["value"] for r in result["trace_request_metadata"]}


def test_trace_info_row():
    built = built_record()
    result = rows.trace_rows(header(), built, ARTIFACTS)
    [info] = result["trace_info"]
    assert info["request_id"] == built["trace_id"]
    assert info["experiment_id"] == 7
    assert info["timestamp_ms"] == built["start_ms"]
    assert info["execution_time_ms"] == built["duration_ms"]
    assert info["status"] == "OK"
    assert info["client_request_id"] == "req-1"
    assert orjson.loads(info["request_preview"]) == built["request"]
    assert orjson.loads(info["response_preview"]) == {"output": "hello"}
    assert info["session_id"] == "conv-7"


def test_spans_rows_have_hex_ids_and_matching_parents():
    built = built_record()
    result = rows.trace_rows(header(), built, ARTIFACTS)
    root, agent, tool = result["spans"]
    assert root["span_id"] == base64.b64decode(built["spans"][0]["span_id"]).hex()
    assert len(root["span_id"]) == 16
    assert root["parent_span_id"] is None
    assert agent["span_id"] == "0123456789abcdef" and agent["parent_span_id"] == root["span_id"]
    assert tool["span_id"] == "fedcba9876543210" and tool["parent_span_id"] == "0123456789abcdef"
    assert [s["name"] for s in result["spans"]] == ["/serving-endpoints/ep/invocations", "agent", "tool"]
    assert [s["type"] for s in result["spans"]] == ["CHAIN", "LLM", "LLM"]
    assert [s["status"] for s in result["spans"]] == ["OK", "UNSET", "UNSET"]
    assert {s["trace_id"] for s in result["spans"]} == {built["trace_id"]}
    assert {s["experiment_id"] for s in result["spans"]} == {7}
    # content is the span in MLflow's stored form, unchanged.
    assert [orjson.loads(s["content"]) for s in result["spans"]] == built["spans"]
    assert root["start_time_unix_nano"] == built["spans"][0]["start_time_unix_nano"]
    assert root["end_time_unix_nano"] == built["spans"][0]["end_time_unix_nano"]


def test_error_record_is_an_error_trace_with_the_error_as_output():
    built = built_record(error="ValueError: nope")
    result = rows.trace_rows(header(status_code=500), built, None)
    [info] = result["trace_info"]
    assert info["status"] == "ERROR"
    assert orjson.loads(info["response_preview"]) == {"error": "ValueError: nope"}
    assert result["spans"][0]["status"] == "ERROR"
    assert metadata_of(result)["agentwharf.status_code"] == "500"


def test_tags_mark_spans_in_the_tracking_store_and_the_artifact_location():
    built = built_record()
    result = rows.trace_rows(header(), built, ARTIFACTS)
    tags = {r["key"]: r["value"] for r in result["trace_tags"]}
    assert {r["request_id"] for r in result["trace_tags"]} == {built["trace_id"]}
    assert tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"
    # The trace's name is trace_info's column, as MLflow's own store keeps it (no tag row).
    assert result["trace_info"][0]["trace_name"] == "ep" and "mlflow.traceName" not in tags
    assert tags["mlflow.artifactLocation"] == f"/data/artifacts/7/traces/{built['trace_id']}/artifacts"
    no_location = rows.trace_rows(header(), built, None)
    assert "mlflow.artifactLocation" not in {r["key"] for r in no_location["trace_tags"]}


def test_metadata_carries_the_header_and_the_conversation():
    built = built_record()
    result = rows.trace_rows(header(), built, ARTIFACTS)
    meta = metadata_of(result)
    assert {r["request_id"] for r in result["trace_request_metadata"]} == {built["trace_id"]}
    assert {k: v for k, v in meta.items() if k.startswith("agentwharf.")} == {
        "agentwharf.request_id": "req-1",
        "agentwharf.endpoint": "ep",
        "agentwharf.served_entity": "ent_1",
        "agentwharf.model_name": "main.m",
        "agentwharf.model_version": "3",
        "agentwharf.caller": "ada@example.com",
        "agentwharf.status_code": "200",
    }
    # The session is trace_info's column, as MLflow's own store keeps it (no metadata row).
    assert result["trace_info"][0]["session_id"] == "conv-7" and "mlflow.trace.session" not in meta
    assert meta["mlflow.trace.user"] == "ada"
    assert meta["mlflow.trace_schema.version"] == "3"
    # The previews are trace_info columns, not duplicated as metadata rows.
    assert orjson.loads(result["trace_info"][0]["request_preview"]) == built["request"]
    assert "mlflow.traceInputs" not in meta and "mlflow.traceOutputs" not in meta
    assert all(isinstance(v, str) for v in meta.values())


def test_missing_header_fields_are_empty_and_unknown_callers_are_left_out():
    built = built_record(inputs={"input": []})
    h = header(entity=None, model=None, caller=None)
    result = rows.trace_rows(h, built, None)
    meta = metadata_of(result)
    assert meta["agentwharf.served_entity"] == meta["agentwharf.model_name"] == ""
    assert meta["agentwharf.model_version"] == ""
    assert "agentwharf.caller" not in meta
    assert "mlflow.trace.session" not in meta and "mlflow.trace.user" not in meta
    assert result["trace_info"][0]["session_id"] is None


def test_request_that_is_not_an_object_still_makes_rows():
    built = built_record(inputs="not json {")
    result = rows.trace_rows(header(), built, None)
    assert result["trace_info"][0]["request_preview"] == "not json {"
    assert result["trace_info"][0]["session_id"] is None


def test_agent_metadata_is_kept_but_header_values_win():
    built = built_record()
    built["metadata"] = {"mlflow.user": "someone", "agentwharf.endpoint": "spoofed", "mlflow.source.git.commit": ""}
    meta = metadata_of(rows.trace_rows(header(), built, None))
    assert meta["mlflow.user"] == "someone"
    assert "mlflow.source.git.commit" not in meta  # empty values are not stored
    assert meta["agentwharf.endpoint"] == "ep"


def test_previews_are_cut_at_1000_chars():
    long_text = "x" * 5000
    built = built_record(inputs={"input": long_text}, outputs={"output": long_text})
    result = rows.trace_rows(header(), built, None)
    [info] = result["trace_info"]
    meta = metadata_of(result)
    assert rows.PREVIEW_CHARS == 1000
    assert len(info["request_preview"]) == len(info["response_preview"]) == 1000
    assert info["request_preview"].startswith('{"input":"xxx')
    assert "mlflow.traceInputs" not in meta
    # The spans keep the whole payload.
    root = orjson.loads(result["spans"][0]["content"])
    assert orjson.loads(root["attributes"]["mlflow.spanInputs"]) == {"input": long_text}


def test_long_request_ids_are_cut_to_fit_client_request_id():
    h = header(request_id="r" * 80)
    result = rows.trace_rows(h, built_record(), None)
    assert result["trace_info"][0]["client_request_id"] == "r" * 50
    assert metadata_of(result)["agentwharf.request_id"] == "r" * 80


def test_inference_row_maps_the_header_and_keeps_short_payloads_whole():
    built = built_record()
    h = header(stream=True)
    row = rows.inference_row(h, built, max_payload_chars=10_000)
    assert row["request_id"] == "req-1"
    assert row["timestamp_ms"] == h["ts_ms"]
    assert row["endpoint"] == "ep"
    assert row["served_entity"] == "ent_1"
    assert (row["model_name"], row["model_version"]) == ("main.m", "3")
    assert row["status_code"] == 200
    assert row["latency_ms"] == h["latency_ms"] >= 0
    assert row["caller"] == "ada@example.com"
    assert row["route"] == "invocations"
    assert row["stream"] is True
    assert orjson.loads(row["request"]) == built["request"]
    assert orjson.loads(row["response"]) == {"output": "hello"}
    assert row["request_truncated"] is False and row["response_truncated"] is False
    assert row["trace_id"] == built["trace_id"]
    assert row["error"] is None


def test_inference_row_truncates_long_payloads_and_says_so():
    built = built_record(inputs={"input": "a" * 500}, outputs={"output": "b" * 50})
    row = rows.inference_row(header(), built, max_payload_chars=100)
    assert len(row["request"]) == 100 and row["request"].startswith('{"input":"aaa')
    assert row["request_truncated"] is True
    assert orjson.loads(row["response"]) == {"output": "b" * 50}
    assert row["response_truncated"] is False
    exact = orjson.dumps({"output": "b" * 50}).decode()
    at_limit = rows.inference_row(header(), built, max_payload_chars=len(exact))
    assert at_limit["response"] == exact and at_limit["response_truncated"] is False
    cut = rows.inference_row(header(), built, max_payload_chars=len(exact) - 1)
    assert cut["response"] == exact[:-1] and cut["response_truncated"] is True


def test_inference_row_for_a_failed_request():
    built = built_record(error="RuntimeError: boom")
    row = rows.inference_row(header(status_code=500, stream=None), built, 1000)
    assert row["response"] is None and row["response_truncated"] is False
    assert row["error"] == "RuntimeError: boom"
    assert row["status_code"] == 500
    assert row["stream"] is False


def test_an_llm_calls_token_usage_goes_where_mlflow_and_the_inference_table_read_it():
    built = record.build(name="/serving-endpoints/chat/completions", start_ns=time.time_ns(), inputs={"messages": []},
                         outputs={"choices": []}, error=None,
                         metadata={"mlflow.trace.tokenUsage": '{"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}'},
                         extra={"usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12, "estimated": True}})
    result = rows.trace_rows(header(), built, ARTIFACTS)
    [info] = result["trace_info"]
    assert (info["input_tokens"], info["output_tokens"], info["total_tokens"]) == (5, 7, 12)
    # MLflow keeps token usage in those columns only (it rebuilds the metadata from them).
    assert "mlflow.trace.tokenUsage" not in metadata_of(result)
    row = rows.inference_row(header(), built, 1000)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"], row["usage_estimated"]) == (5, 7, 12, True)


def test_what_mlflow_reads_from_columns_alone_gets_no_row():
    from mlflow.store.tracking.utils.trace_analytics import PROMOTED_TRACE_METADATA_KEYS
    from mlflow.tracing.constant import TraceTagKey

    assert rows._COLUMN_TAGS == {TraceTagKey.TRACE_NAME}
    assert rows._COLUMN_METADATA <= PROMOTED_TRACE_METADATA_KEYS


def test_the_token_columns_are_mlflows():
    from mlflow.store.tracking.utils.trace_analytics import TOKEN_COLUMN_BY_KEY

    assert set(rows.TOKEN_COLUMNS) == set(TOKEN_COLUMN_BY_KEY.values())


def test_an_agents_request_is_stored_without_loading_mlflow():
    # The writer's process never loads MLflow for agents' traces (seconds of CPU, ~130 MiB).
    code = ("import sys; from agentwharf.tracing import record, rows; "
            "built = record.build(name='n', start_ns=0, inputs={}, outputs={}, error=None); "
            "rows.trace_rows({'experiment_id': '1', 'request_id': 'r', 'endpoint': 'e', 'status_code': 200}, built, None); "
            "assert 'mlflow' not in sys.modules, 'MLflow was loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_agents_request_has_no_token_columns_filled():
    result = rows.trace_rows(header(), built_record(), ARTIFACTS)
    assert result["trace_info"][0]["total_tokens"] is None
    row = rows.inference_row(header(), built_record(), 1000)
    assert row["total_tokens"] is None and row["usage_estimated"] is None


def test_a_shadow_copy_is_linked_to_the_live_request_in_its_trace_and_its_row():
    built = built_record()
    shadow = header(shadow_of="tr-live")
    assert metadata_of(rows.trace_rows(shadow, built, None))["agentwharf.shadow_of"] == "tr-live"
    assert rows.inference_row(shadow, built, 1000)["shadow_of"] == "tr-live"
    # A live request's row and trace carry no mark.
    assert "agentwharf.shadow_of" not in metadata_of(rows.trace_rows(header(), built, None))
    assert rows.inference_row(header(), built, 1000)["shadow_of"] is None
