"""agentwharf.tracing.record (and capture): a request's trace, with the agent's spans nested
under the request's root span. The agent traces here are real MLflow traces made in-process."""

import base64
import re
import threading
import time

import mlflow
import orjson
import pytest

from agentwharf.tracing import capture, record

NAME = "/serving-endpoints/ep/invocations"


def b64_int(value: str) -> int:
    return int.from_bytes(base64.b64decode(value), "big")


def attr(span: dict, key: str):
    return orjson.loads(span["attributes"][key])


def build(**overrides):
    arguments = dict(name=NAME, start_ns=time.time_ns() - 3_000_000, inputs={"input": [{"role": "user", "content": "hi"}]},
                     outputs={"output": "hello"}, error=None)
    arguments.update(overrides)
    return record.build(**arguments)


# --- without agent traces -----------------------------------------------------------------

def test_new_trace_ids_are_tr_prefixed_hex_of_the_otel_id():
    otel_id, trace_id = record.new_trace_ids()
    assert re.fullmatch(r"tr-[0-9a-f]{32}", trace_id)
    assert int(trace_id[3:], 16) == otel_id
    assert record.new_trace_ids()[1] != trace_id


def test_build_without_agent_traces_is_one_ok_root_span():
    start_ns = time.time_ns() - 3_000_000
    built = build(start_ns=start_ns, attributes={"agentwharf.endpoint": "ep", "agentwharf.request_id": "r1"})
    assert re.fullmatch(r"tr-[0-9a-f]{32}", built["trace_id"])
    assert built["state"] == "OK" and built["error"] is None
    assert built["start_ms"] == start_ns // 1_000_000
    assert built["duration_ms"] >= 3
    assert built["metadata"] == {}
    assert built["request"] == {"input": [{"role": "user", "content": "hi"}]}
    assert built["response"] == {"output": "hello"}
    [root] = built["spans"]
    assert root["parent_span_id"] is None
    assert root["name"] == NAME
    assert root["status"] == {"code": "STATUS_CODE_OK", "message": ""}
    assert root["events"] == []
    assert root["start_time_unix_nano"] == start_ns <= root["end_time_unix_nano"]
    assert b64_int(root["trace_id"]) == int(built["trace_id"][3:], 16)
    assert len(base64.b64decode(root["span_id"])) == 8
    # Attribute values are JSON text, as MLflow stores them.
    assert attr(root, "mlflow.spanInputs") == built["request"]
    assert attr(root, "mlflow.spanOutputs") == {"output": "hello"}
    assert attr(root, "mlflow.spanType") == "CHAIN"
    assert attr(root, "mlflow.traceRequestId") == built["trace_id"]
    assert attr(root, "agentwharf.endpoint") == "ep"
    assert attr(root, "agentwharf.request_id") == "r1"
    assert orjson.loads(orjson.dumps(built)) == built  # the record is plain JSON


def test_build_with_an_error_is_an_error_root_span_with_an_exception_event():
    built = build(outputs=None, error="ValueError: boom")
    assert built["state"] == "ERROR" and built["error"] == "ValueError: boom"
    [root] = built["spans"]
    assert root["status"] == {"code": "STATUS_CODE_ERROR", "message": "ValueError: boom"}
    [event] = root["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "ValueError: boom"
    assert event["time_unix_nano"] == root["end_time_unix_nano"]
    assert attr(root, "mlflow.spanOutputs") is None


def test_duration_is_never_negative_even_with_a_start_in_the_future():
    built = build(start_ns=time.time_ns() + 10_000_000_000)
    assert built["duration_ms"] == 0


def test_attribute_values_that_are_not_json_become_strings():
    built = build(inputs={"when": object.__new__(type("Thing", (), {"__str__": lambda self: "a thing"}))})
    assert attr(built["spans"][0], "mlflow.spanInputs") == {"when": "a thing"}


def test_each_build_is_a_new_trace():
    assert build()["trace_id"] != build()["trace_id"]


# --- with real MLflow traces ----------------------------------------------------------------

@pytest.fixture(scope="module")
def captured_tracing(tmp_path_factory):
    """MLflow tracing routed to capture.take(), against a SQLite tracking store (no server)."""
    folder = tmp_path_factory.mktemp("mlflow")
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")
    patch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.tracing.reset()
    try:
        assert capture.install() is True
        yield
    finally:
        mlflow.tracing.reset()
        patch.undo()


@mlflow.trace(name="agent")
def agent(question: str) -> str:
    return helper(question) + "!"


@mlflow.trace(name="helper")
def helper(question: str) -> str:
    return question.upper()


@mlflow.trace(name="failing_agent")
def failing_agent() -> None:
    raise RuntimeError("agent broke")


def run_captured(fn, *args):
    capture.begin()
    try:
        fn(*args)
    except RuntimeError:
        pass
    return capture.take()


def test_capture_collects_the_trace_finished_on_this_thread(captured_tracing):
    [trace] = run_captured(agent, "hi")
    assert re.fullmatch(r"tr-[0-9a-f]{32}", trace.info.trace_id)
    assert [s.name for s in trace.data.spans] == ["agent", "helper"]
    assert capture.take() == []  # taken once


def test_captured_traces_have_time_ordered_ids_mlflow_reads_back(captured_tracing):
    """The worker's MLflow traces get ids with the time in their high bits (tracing.ids);
    MLflow's own form of them (``tr-`` + 32 hex of the OpenTelemetry id) is unchanged."""
    before = time.time_ns() // 1_000_000
    [first] = run_captured(agent, "one")
    time.sleep(0.002)
    [second] = run_captured(agent, "two")
    after = time.time_ns() // 1_000_000
    for trace in (first, second):
        assert re.fullmatch(r"tr-[0-9a-f]{32}", trace.info.trace_id)
        assert before <= int(trace.info.trace_id[3:], 16) >> 80 <= after
        assert {span.trace_id for span in trace.data.spans} == {trace.info.trace_id}
    assert first.info.trace_id < second.info.trace_id


def test_capture_ignores_traces_without_begin_and_from_other_threads(captured_tracing):
    agent("nobody asked")
    assert capture.take() == []
    capture.begin()
    thread = threading.Thread(target=agent, args=("elsewhere",))
    thread.start()
    thread.join()
    assert capture.take() == []


def test_build_nests_the_agent_trace_under_the_request_root(captured_tracing):
    [trace] = run_captured(agent, "hi")
    agent_spans = {s.name: s for s in trace.data.spans}
    built = build(agent_traces=[trace])

    assert built["trace_id"] == trace.info.trace_id
    root, *children = built["spans"]
    assert root["name"] == NAME and root["parent_span_id"] is None
    assert [c["name"] for c in children] == ["agent", "helper"]
    by_name = {c["name"]: c for c in children}
    # The agent's root span is re-parented under the request; its own children keep their parent.
    assert by_name["agent"]["parent_span_id"] == root["span_id"]
    assert b64_int(by_name["helper"]["parent_span_id"]) == int(agent_spans["agent"].span_id, 16)
    assert b64_int(by_name["agent"]["span_id"]) == int(agent_spans["agent"].span_id, 16)
    # One trace: every span carries the agent trace's id.
    assert {s["trace_id"] for s in built["spans"]} == {root["trace_id"]}
    assert b64_int(root["trace_id"]) == int(trace.info.trace_id[3:], 16)
    assert {attr(s, "mlflow.traceRequestId") for s in built["spans"]} == {trace.info.trace_id}
    assert attr(by_name["helper"], "mlflow.spanOutputs") == "HI"
    assert attr(by_name["agent"], "mlflow.spanInputs") == {"question": "hi"}
    assert len({s["span_id"] for s in built["spans"]}) == 3


def test_build_keeps_agent_metadata_except_sizes(captured_tracing):
    [trace] = run_captured(agent, "hi")
    built = build(agent_traces=[trace])
    expected = {k: v for k, v in trace.info.trace_metadata.items() if not k.startswith("mlflow.trace.size")}
    assert built["metadata"] == expected
    assert built["metadata"]  # MLflow puts something there (user, source, schema version)
    assert not any(k.startswith("mlflow.trace.size") for k in built["metadata"])


def test_build_merges_several_agent_traces_into_one(captured_tracing):
    capture.begin()
    agent("one")
    helper("two")
    traces = capture.take()
    assert len(traces) == 2
    built = build(agent_traces=traces)
    root, *children = built["spans"]
    assert built["trace_id"] == traces[0].info.trace_id
    assert [c["name"] for c in children] == ["agent", "helper", "helper"]
    assert {s["trace_id"] for s in built["spans"]} == {root["trace_id"]}
    assert [c["parent_span_id"] == root["span_id"] for c in children] == [True, False, True]


def test_build_with_a_failed_agent_trace(captured_tracing):
    [trace] = run_captured(failing_agent)
    built = build(agent_traces=[trace], outputs=None, error="RuntimeError: agent broke")
    root, child = built["spans"]
    assert built["state"] == "ERROR"
    assert root["status"]["code"] == "STATUS_CODE_ERROR"
    assert child["name"] == "failing_agent" and child["parent_span_id"] == root["span_id"]
    assert child["status"]["code"] == "STATUS_CODE_ERROR"


# --- bounds and encoding ------------------------------------------------------------------------

def deep(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_record_within_its_bounds_is_untouched():
    built = build(max_field_chars=10_000)
    assert "agentwharf.truncated" not in built["metadata"]
    assert "request_truncated" not in built and "response_truncated" not in built


def test_long_inputs_outputs_and_attributes_are_cut_flagged_and_stay_json():
    built = build(inputs={"input": "i" * 5000}, outputs={"output": "o" * 5000}, attributes={"note": "n" * 5000},
                  max_field_chars=1000)
    root = built["spans"][0]
    for key in ("mlflow.spanInputs", "mlflow.spanOutputs", "note"):
        text = attr(root, key)  # still JSON: a string now, the start of the value's JSON
        assert isinstance(text, str) and len(text) < 1100 and "cut by agentwharf" in text
    assert attr(root, "mlflow.spanInputs").startswith('{"input":"iii')
    assert built["request"].startswith('{"input":"iii') and built["request_truncated"] is True
    assert built["response"].startswith('{"output":"ooo') and built["response_truncated"] is True
    flagged = built["metadata"]["agentwharf.truncated"].split(",")
    assert {"request", "response", f"{NAME}:note", f"{NAME}:mlflow.spanInputs"} <= set(flagged)


def test_encode_keeps_a_request_nested_deeper_than_json_allows_as_text():
    built = build(inputs={"deep": deep(300)})
    stored = orjson.loads(record.encode(built))
    assert stored["request"].startswith("[not storable as JSON")
    assert stored["metadata"]["agentwharf.truncated"] == "not storable as JSON"
    assert attr(stored["spans"][0], "mlflow.spanInputs").startswith("[not storable as JSON")
    assert record.representable({"deep": deep(200)}) and not record.representable({"deep": deep(300)})


def test_encode_of_an_ordinary_record_is_plain_json():
    built = build()
    assert orjson.loads(record.encode(built)) == orjson.loads(orjson.dumps(built))


def test_the_trace_id_is_read_off_an_encoded_record_without_decoding_it():
    built = record.build(name="x", start_ns=time.time_ns(), inputs={"big": "x" * 100_000}, outputs=None, error=None)
    assert record.trace_id_of(record.encode(built)) == built["trace_id"]
    # Another key order, or no record at all, still answers.
    assert record.trace_id_of(orjson.dumps({"state": "OK", "trace_id": "tr-1"})) == "tr-1"
    assert record.trace_id_of(b"not json") is None and record.trace_id_of(b"[1]") is None
