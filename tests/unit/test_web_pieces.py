"""agentwharf.web's pure parts: conversations from traces, label parsing, request shapes, the
per-minute chart figures (on a migrated SQLite database), and the front door's CSRF check."""

from __future__ import annotations

import pytest
from mlflow.genai.label_schemas import InputCategorical, InputNumeric, InputPassFail, InputText, LabelSchema

from agentwharf.auth.gatekeeper import cross_site_cookie_request, same_origin
from agentwharf.errors import InvalidParameter
from agentwharf.store.models import InferenceLog
from agentwharf.web import charts
from agentwharf.web.conversation import Turn, conversation
from agentwharf.web.review import parse_label
from agentwharf.web.shapes import shape_from_mlmodel


def test_a_responses_exchange_with_a_tool_call_reads_as_chat():
    request = {"input": [{"role": "user", "content": "weather?"}], "custom_inputs": {"city": "Oslo"}}
    response = {"output": [
        {"type": "function_call", "name": "get_weather", "arguments": '{"city": "Oslo"}', "call_id": "c1"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
    ]}
    assert conversation(request, response) == [
        Turn("user", "text", "weather?"), Turn("assistant", "tool_call", '{"city": "Oslo"}', "get_weather"),
        Turn("tool", "tool_output", "sunny", "c1"), Turn("assistant", "text", "It is sunny.")]


def test_chat_shapes_and_mlflows_request_wrapper_read_as_chat():
    wrapped = '{"request": {"messages": [{"role": "user", "content": "hi"}]}}'
    assert conversation(wrapped, {"messages": [{"role": "assistant", "content": "hello", "id": "1"}]}) == [
        Turn("user", "text", "hi"), Turn("assistant", "text", "hello")]
    completion = {"choices": [{"message": {"role": "assistant", "content": "yes",
                                           "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}}]}
    assert conversation({"messages": []}, completion) == [Turn("assistant", "text", "yes"), Turn("assistant", "tool_call", "{}", "f")]


def test_anything_else_is_shown_as_json_not_lost():
    turns = conversation({"dataframe_split": {"columns": ["a"], "data": [[1]]}}, {"predictions": [2]})
    assert [t.kind for t in turns] == ["json", "json"] and '"predictions"' in turns[1].text


def _schema(name, kind, spec):
    return LabelSchema(name=name, type=kind, input=spec)


@pytest.mark.parametrize(("schema", "raw", "value"), [
    (_schema("ok", "feedback", InputPassFail("Correct", "Wrong")), ["true"], True),
    (_schema("ok", "feedback", InputPassFail("Correct", "Wrong")), ["false"], False),
    (_schema("tone", "feedback", InputCategorical(["good", "bad"])), ["bad"], "bad"),
    (_schema("tags", "feedback", InputCategorical(["a", "b", "c"], multi_select=True)), ["a", "c"], ["a", "c"]),
    (_schema("score", "feedback", InputNumeric(1, 5)), ["4"], 4),
    (_schema("score", "feedback", InputNumeric(0, 1)), ["0.5"], 0.5),
    (_schema("expected_facts", "expectation", InputText()), ["fact one\n\n fact two "], ["fact one", "fact two"]),
    (_schema("expected_response", "expectation", InputText()), [" the answer "], "the answer"),
    (_schema("note", "feedback", InputText()), ["  "], None),
])
def test_labels_parse_to_assessment_values(schema, raw, value):
    assert parse_label(schema, raw) == value


@pytest.mark.parametrize(("schema", "raw", "words"), [
    (_schema("tone", "feedback", InputCategorical(["good", "bad"])), ["ugly"], "not one of"),
    (_schema("score", "feedback", InputNumeric(1, 5)), ["9"], "outside"),
    (_schema("score", "feedback", InputNumeric(1, 5)), ["many"], "not a number"),
    (_schema("ok", "feedback", InputPassFail("Yes", "No")), ["maybe"], "choose Yes or No"),
    (_schema("note", "feedback", InputText(max_length=3)), ["toolong"], "at most 3"),
])
def test_bad_labels_are_refused_naming_the_schema(schema, raw, words):
    with pytest.raises(InvalidParameter, match=words) as refused:
        parse_label(schema, raw)
    assert schema.name in refused.value.message


@pytest.mark.parametrize(("mlmodel", "shape"), [
    (b"metadata:\n  task: agent/v1/responses\n", "responses"),
    (b"metadata:\n  task: agent/v2/chat\n", "chat_agent"),
    (b"metadata:\n  task: agent/v1/chat\n", "chat_model"),
    (b"flavors: {}\n", "pyfunc"),
    (None, "responses"),
])
def test_the_request_shape_comes_from_the_models_task(mlmodel, shape):
    assert shape_from_mlmodel(mlmodel) == shape


def _row(n, ts, latency, status=200, endpoint="ep"):
    return InferenceLog(request_id=f"r{n}", timestamp_ms=ts, endpoint=endpoint, status_code=status, latency_ms=latency)


def test_chart_figures_per_minute(db):
    now = 10 * 3_600_000 + 30_000  # half a minute into a bucket
    minute = (now // 60_000) * 60_000
    with db.session() as session:
        # Five requests two minutes ago (one failed), one now, one of another endpoint, one too old.
        session.add_all([_row(i, minute - 120_000 + i, latency) for i, latency in enumerate([10, 20, 30, 40, 1000])])
        session.add(_row(9, minute - 120_000 + 9, 50, status=500))
        session.add(_row(10, minute + 1, 200))
        session.add(_row(11, minute + 2, 5, endpoint="other"))
        session.add(_row(12, minute - 3_700_000, 5))
    data = charts.series(db, "ep", now)
    points = data["points"]
    assert len(points) == 60 and points[-1]["t"] == minute
    busy = points[-3]
    assert busy["requests"] == 6 and busy["errors"] == 1
    assert busy["requests_per_s"] == pytest.approx(6 / 60, abs=1e-3)
    assert busy["error_rate"] == pytest.approx(1 / 6, abs=1e-3)
    assert busy["p50_ms"] == 30 and busy["p99_ms"] == 1000
    assert busy["in_flight"] == pytest.approx(1150 / 60_000, abs=1e-3)
    # The current minute is partial: its rate is over the 30 s gone so far.
    assert points[-1]["requests"] == 1 and points[-1]["requests_per_s"] == pytest.approx(1 / 30, abs=1e-3)
    assert sum(p["requests"] for p in points) == 7


def _scope(method="POST", headers=()):
    return {"method": method, "headers": [(k.encode(), v.encode()) for k, v in headers]}


def test_cookie_requests_that_change_something_must_come_from_the_platforms_pages():
    cookie = ("cookie", "agentwharf_token=awp_x")
    host = ("host", "127.0.0.1:8710")
    assert not cross_site_cookie_request(_scope("POST", [cookie, host, ("origin", "http://127.0.0.1:8710")]))
    assert cross_site_cookie_request(_scope("POST", [cookie, host, ("origin", "http://evil.example")]))
    assert cross_site_cookie_request(_scope("POST", [cookie, host, ("origin", "http://127.0.0.1:9999")]))
    assert cross_site_cookie_request(_scope("DELETE", [cookie, host]))  # no Origin, no Referer
    assert cross_site_cookie_request(_scope("POST", [cookie, host, ("origin", "null")]))
    assert not cross_site_cookie_request(_scope("POST", [cookie, host, ("referer", "http://127.0.0.1:8710/serving/")]))
    # Reading is never refused; a bearer token is not a browser's ambient credential.
    assert not cross_site_cookie_request(_scope("GET", [cookie, host, ("origin", "http://evil.example")]))
    assert not cross_site_cookie_request(_scope("POST", [("authorization", "Bearer awp_x"), host,
                                                          ("origin", "http://evil.example")]))


def test_same_origin_compares_host_and_port_exactly():
    assert same_origin(_scope(headers=[("host", "a.example"), ("origin", "https://A.example")]))
    assert not same_origin(_scope(headers=[("host", "a.example"), ("origin", "https://a.example.evil")]))
    assert not same_origin(_scope(headers=[("host", "a.example"), ("origin", "ftp://a.example")]))


def test_the_rollout_panel_reads_each_gate_as_figures_bound_and_verdict():
    from agentwharf.control.rollout_gates import Figures, judge
    from agentwharf.rollouts import Gate, Rollout
    from agentwharf.web.rollout_panel import panel

    rollout = Rollout(canary_percent=10, min_requests=20, gates=[
        Gate(metric="error_rate", max=0.1), Gate(metric="p95_latency_ms", max_ratio=1.5), Gate(scorer="safety", min_pass_rate=0.9)])
    candidate = Figures(requests=25, errors=5, latencies_ms=[40.0] * 25, scores={"safety": [True] * 7})
    current = Figures(requests=40, errors=0, latencies_ms=[30.0] * 40, scores={"safety": [True] * 30})
    view = {"state": "RUNNING", "candidate": "m-2", "current": "m-1", "step": 0, "traffic_percentage": 10,
            "spec": rollout.to_json() | {"steps": [10, 50]},
            "window": {"candidate": candidate.to_json(), "current": current.to_json(),
                       "gates": [judge(g, rollout, candidate, current).to_json() for g in rollout.gates]},
            "decisions": [{"at_ms": 0, "action": "START", "percent": 10, "reason": "canary at 10%", "by": "admin"}]}
    shown = panel(view)
    assert (shown["candidate_share"], shown["current_share"], shown["step"], shown["steps"]) == (10, 90, 1, [10, 50])
    error_rate, latency, safety = shown["gates"]
    assert (error_rate["candidate"], error_rate["current"], error_rate["bound"], error_rate["verdict"]) == ("0.2", "0", "≤ 0.1", "fails")
    assert (latency["candidate"], latency["current"], latency["bound"], latency["verdict"]) == ("40 ms", "30 ms", "≤ 1.5 × current", "holds")
    assert (safety["bound"], safety["verdict"]) == ("pass rate ≥ 0.9", "needs 13 more samples")
    assert shown["decisions"] == [{"time": "1970-01-01 00:00:00 UTC", "action": "START", "percent": 10,
                                   "reason": "canary at 10%", "by": "admin"}]
    # Before the controller first judged it: the gates are listed, not judged.
    fresh = panel({**view, "window": None})
    assert [g["verdict"] for g in fresh["gates"]] == ["not judged yet"] * 3 and fresh["window"] is None
