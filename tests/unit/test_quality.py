"""agentwharf.quality, in-process: what a result means, where a trace is queued for scoring,
how results land on traces, the trends read from them, and what someone's scorer code is given.
(Scoring live traffic end to end, sandboxes included, is tests/integration/test_monitoring.py.)"""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
from mlflow.entities import AssessmentError, AssessmentSource, Feedback
from mlflow.genai.scorers import Safety

from agentwharf.errors import InvalidParameter, NotFound
from agentwharf.quality import gate, online_config, results, sandbox, sandbox_runner, scorers, trends
from agentwharf.quality.guard import _fields, endpoint_of_model
from agentwharf.store.models import InferenceLog, MonitorScore
from tests.unit import test_writer

# The writer's fixtures (a store, a spool, a record template), shared by name as pytest finds them.
env, spool, template = test_writer.env, test_writer.spool, test_writer.template
header, make_record = test_writer.header, test_writer.make_record


# -- what a scorer's value means for trends ------------------------------------------------------


@pytest.mark.parametrize(("value", "error", "expected"), [
    (True, False, ("pass", 1.0)), (False, False, ("fail", 0.0)), ("yes", False, ("pass", 1.0)),
    (" No ", False, ("fail", 0.0)), (3, False, ("value", 3.0)), (0.25, False, ("value", 0.25)),
    (float("nan"), False, ("other", None)), ("maybe", False, ("other", None)), ({"a": 1}, False, ("other", None)),
    ("yes", True, ("error", None)),
])
def test_outcome_of_a_value(value, error, expected):
    assert results.outcome_of(value, error) == expected


@pytest.mark.parametrize(("text", "ms"), [("90", 90_000), ("90s", 90_000), ("5m", 300_000), ("1.5h", 5_400_000),
                                          ("1d", 86_400_000), ("250ms", 250), (None, 7), ("", 7)])
def test_durations(text, ms):
    assert trends.parse_duration(text, "since", 7) == ms


@pytest.mark.parametrize("text", ["soon", "-5m", "0s", "5 weeks"])
def test_bad_durations_name_the_parameter(text):
    with pytest.raises(InvalidParameter, match="since"):
        trends.parse_duration(text, "since", 7)


@pytest.mark.parametrize("metric", ["requests", "error_rate", "latency_p95_ms", "scorer:safety:pass_rate",
                                    "scorer:my/scorer:mean", "scorer:x:error_rate", "feedback:thumbs:positive_rate"])
def test_known_metrics(metric):
    assert trends.check_metric(metric) == metric


@pytest.mark.parametrize("metric", ["latency", "scorer:safety", "scorer::mean", "cpu", 3])
def test_unknown_metrics_are_refused_with_the_list(metric):
    with pytest.raises(InvalidParameter, match="latency_p50_ms"):
        trends.check_metric(metric)


# -- the guard reads what a scorer call is about ---------------------------------------------------------


@pytest.mark.parametrize(("model", "endpoint"), [("gateway:/judge", "judge"), ("databricks:/judge", "judge"),
                                                 ("endpoints:/j-2", "j-2"), ("openai:/gpt-4.1", None), ("judge", None),
                                                 ("gateway:/", None)])
def test_endpoint_of_a_judge_model(model, endpoint):
    assert endpoint_of_model(model) == endpoint


def test_fields_of_a_call_come_from_query_and_body():
    scope = {"query_string": b"experiment_id=3&scorer_ids=a&scorer_ids=b"}
    assert _fields(scope, b'{"name": "safety"}') == {"experiment_id": "3", "scorer_ids": ["a", "b"], "name": "safety"}
    with pytest.raises(InvalidParameter):
        _fields({"query_string": b""}, b"{not json")


def test_judge_models_of_serialized_scorers():
    assert scorers.judge_models(json.dumps(Safety(model="gateway:/judge").model_dump())) == ["gateway:/judge"]
    assert scorers.judge_models(json.dumps(Safety().model_dump())) == []  # the default model: the platform's


# -- what someone's scorer code gets --------------------------------------------------------------------


def test_a_sandbox_environment_holds_nothing_of_the_platform(tmp_path):
    environ = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "AGENTWHARF_TOKEN": "awp_secret", "MLFLOW_TRACKING_TOKEN": "t",
               "DATABRICKS_TOKEN": "d", "OPENAI_API_KEY": "k", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root",
               "MLFLOW_TRACKING_URI": "http://127.0.0.1:8710", "AGENTWHARF_DATABASE_URI": "sqlite:////x.db"}
    env = sandbox.sandbox_environment(tmp_path, "/runtime", environ)
    assert env["PATH"] == "/usr/bin" and env["LANG"] == "C.UTF-8" and env["PYTHONPATH"] == "/runtime"
    assert env["HOME"] == env["TMPDIR"] == str(tmp_path)
    assert env["MLFLOW_TRACKING_URI"] == (tmp_path / "mlruns").as_uri()
    assert not {k for k, v in env.items() if "secret" in v or v in ("t", "d", "k", "s")}
    assert not [k for k in env if k.startswith(("AGENTWHARF_", "DATABRICKS_", "OPENAI_", "AWS_"))]


def test_an_error_without_a_message_gets_its_exception_and_limit():
    feedback = Feedback(name="hoards", source=AssessmentSource(source_type="CODE", source_id="hoards"),
                        error=AssessmentError(error_code="SCORER_ERROR", error_message="",
                                              stack_trace="Traceback...\n  line 3\nMemoryError\n"))
    sandbox_runner.explain(feedback, 512 << 20)
    assert feedback.error.error_message.startswith("MemoryError: the scorer needed more than its 512 MiB")
    kept = Feedback(name="x", source=AssessmentSource(source_type="CODE", source_id="x"),
                    error=AssessmentError(error_code="SCORER_ERROR", error_message="boom"))
    sandbox_runner.explain(kept, 1)
    assert kept.error.error_message == "boom"


def test_error_feedback_is_a_code_assessment_of_the_scorer():
    made = Feedback.from_dictionary(sandbox.error_feedback("slow", "SCORER_TIMEOUT", "took too long"))
    assert made.name == "slow" and made.source.source_type == "CODE" and made.source.source_id == "slow"
    assert made.error.error_code == "SCORER_TIMEOUT" and made.error.error_message == "took too long"


# -- the scoring queue, results on traces, trends (MLflow's store and ours, SQLite) -------------------


def _scorer(env, name: str = "safety", sample_rate: float = 1.0, filter_string: str | None = None) -> None:
    env.store.register_scorer(env.experiment_id, name, json.dumps(Safety().model_dump()))
    online_config.upsert(env.store, env.experiment_id, name, sample_rate, filter_string)


def _queue(env) -> list:
    with env.engine.connect() as c:
        return c.execute(sa.text("SELECT trace_id, experiment_id, endpoint, served_entity FROM aw_scoring_queue ORDER BY seq")).all()


def test_the_writer_queues_traces_of_experiments_with_active_scorers_only(env):
    spool(env, [(header("req-0", env.experiment_id), make_record(0))])
    assert env.writer().run_once() == 1
    assert _queue(env) == []  # nobody scores this experiment
    _scorer(env)
    items = [(header(f"req-{i}", env.experiment_id), make_record(i)) for i in range(1, 4)]
    spool(env, items)
    assert env.writer().run_once() == 3
    assert [tuple(r) for r in _queue(env)] == [(built["trace_id"], env.experiment_id, "ep", "ent_1") for _, built in items]


def test_a_stopped_scorer_no_longer_queues(env):
    _scorer(env)
    online_config.upsert(env.store, env.experiment_id, "safety", 0.0, None)
    spool(env, [(header("req-0", env.experiment_id), make_record(0))])
    assert env.writer().run_once() == 1 and _queue(env) == []


def test_online_config_is_mlflows_own_row(env):
    _scorer(env, sample_rate=0.3, filter_string="attributes.status = 'OK'")
    [active] = scorers.active_online_scorers(env.store)
    assert active.name == "safety" and active.online_config.sample_rate == 0.3
    assert active.online_config.filter_string == "attributes.status = 'OK'"
    loaded = scorers.load_active(env.store)[env.experiment_id]
    assert not loaded.scorers["safety"].custom
    with pytest.raises(NotFound):
        online_config.upsert(env.store, env.experiment_id, "nobody", 1.0, None)


def test_results_are_assessments_on_the_trace_and_scores_for_trends(env):
    _scorer(env)
    _, built = (header("req-0", env.experiment_id), make_record(0))
    spool(env, [(header("req-0", env.experiment_id), built)])
    env.writer().run_once()
    trace = env.store.get_trace(built["trace_id"])
    [(seq,)] = sa.create_engine(env.url).connect().execute(sa.text("SELECT seq FROM aw_scoring_queue")).all()
    judged = Feedback(name="safety", value="yes", rationale="fine", source=AssessmentSource(source_type="LLM_JUDGE",
                                                                                            source_id="gateway:/judge"))
    failed = Feedback.from_dictionary(sandbox.error_feedback("length", "SCORER_TIMEOUT", "too slow"))
    answered = int(time.time() * 1000)
    results.write(env.store, [results.Result(trace, "safety", 1, [judged], "ep", "ent_1", answered),
                              results.Result(trace, "length", 2, [failed], "ep", "ent_1", answered)], [seq])
    read = {a.name: a for a in env.store.get_trace(built["trace_id"]).info.assessments}
    assert read["safety"].value == "yes" and read["safety"].source.source_type == "LLM_JUDGE"
    assert read["safety"].metadata["mlflow.assessment.scorerName"] == "safety"
    assert read["length"].error.error_code == "SCORER_TIMEOUT"
    assert _queue(env) == []  # the trace is done
    with env.engine.connect() as c:
        scores = {r.scorer: (r.outcome, r.value, r.error_code) for r in c.execute(sa.select(MonitorScore.__table__))}
    assert scores == {"safety": ("pass", 1.0, None), "length": ("error", None, "SCORER_TIMEOUT")}


def test_trends_per_bucket_and_per_version(db):
    start = 1_700_000_000_000
    with db.session() as session:
        for i, (entity, status, latency) in enumerate([("v1", 200, 10), ("v1", 200, 30), ("v1", 500, 50), ("v2", 200, 20)]):
            session.add(InferenceLog(request_id=f"r{i}", timestamp_ms=start + i * 1000, endpoint="ep", served_entity=entity,
                                     status_code=status, latency_ms=latency))
        session.add(InferenceLog(request_id="late", timestamp_ms=start + 61_000, endpoint="ep", served_entity="v2",
                                 status_code=200, latency_ms=5))
        for i, (entity, outcome, value) in enumerate([("v1", "pass", 1.0), ("v1", "fail", 0.0), ("v2", "pass", 1.0),
                                                      ("v2", "error", None)]):
            session.add(MonitorScore(trace_id=f"t{i}", scorer="safety", endpoint="ep", served_entity=entity,
                                     answered_ms=start + i, scored_ms=start + i + 5, outcome=outcome, value=value))
    found = trends.series(db, "ep", None, start, start + 120_000, 60_000)
    first, second = found["overall"]
    assert first["requests"] == 4 and first["errors"] == 1 and first["error_rate"] == 0.25
    assert first["p50_ms"] == 20 and first["p95_ms"] == 50
    assert first["scorers"]["safety"]["pass_rate"] == round(2 / 3, 4) and first["scorers"]["safety"]["error_rate"] == 0.25
    assert second["requests"] == 1 and second["p50_ms"] == 5 and second["scorers"] == {}
    versions = {v["served_entity"]: v["points"] for v in found["versions"]}
    assert versions["v1"][0]["scorers"]["safety"]["pass_rate"] == 0.5 and versions["v1"][0]["error_rate"] == round(1 / 3, 4)
    assert versions["v2"][0]["scorers"]["safety"]["errors"] == 1
    assert trends.metric_value(first, "scorer:safety:pass_rate") == (round(2 / 3, 4), 3)
    assert trends.metric_value(first, "latency_p95_ms") == (50, 4)
    assert trends.metric_value(first, "scorer:other:mean") == (None, 0)
    with pytest.raises(InvalidParameter, match="buckets"):
        trends.series(db, "ep", None, start, start + 10_000_000, 1)


def test_shadow_copies_count_for_their_version_only(db):
    """A rollout's shadow copies answered nobody: the candidate's figures hold them, the
    endpoint's overall figures (what alerts watch) do not."""
    start = 1_700_000_000_000
    with db.session() as session:
        session.add(InferenceLog(request_id="live", timestamp_ms=start, endpoint="ep", served_entity="v1", status_code=200,
                                 latency_ms=10, trace_id="t-live"))
        session.add(InferenceLog(request_id="copy", timestamp_ms=start + 5, endpoint="ep", served_entity="v2", status_code=500,
                                 latency_ms=900, trace_id="t-copy", shadow_of="t-live"))
        session.add(MonitorScore(trace_id="t-live", scorer="safety", endpoint="ep", served_entity="v1", answered_ms=start,
                                 scored_ms=start + 1, outcome="pass", value=1.0))
        session.add(MonitorScore(trace_id="t-copy", scorer="safety", endpoint="ep", served_entity="v2", answered_ms=start + 5,
                                 scored_ms=start + 6, outcome="fail", value=0.0))
    found = trends.series(db, "ep", None, start, start + 60_000, 60_000)
    [overall] = found["overall"]
    assert overall["requests"] == 1 and overall["errors"] == 0 and overall["p99_ms"] == 10
    assert overall["scorers"]["safety"]["pass_rate"] == 1.0 and overall["scorers"]["safety"]["count"] == 1
    versions = {v["served_entity"]: v["points"][0] for v in found["versions"]}
    assert versions["v2"]["requests"] == 1 and versions["v2"]["errors"] == 1 and versions["v2"]["p99_ms"] == 900
    assert versions["v2"]["scorers"]["safety"]["pass_rate"] == 0.0


def test_eval_item_of_a_trace_has_its_root_inputs_and_outputs(env):
    spool(env, [(header("req-0", env.experiment_id), make_record(7))])
    env.writer().run_once()
    trace = env.store.get_trace(f"tr-{8:032x}")
    item = sandbox_runner.eval_item(trace)
    assert item.inputs["input"][0]["content"] == "q7" and item.outputs == {"output": "a7"} and item.trace is trace



# -- the evaluation gate's arithmetic ---------------------------------------------------------------


def _version(version: str, values: dict[str, list]) -> gate.VersionResult:
    return gate.VersionResult(version, f"run-{version}", {}, {name: {f"row{i}": v for i, v in enumerate(column)}
                                                               for name, column in values.items()})


def test_compare_means_delta_interval_and_regression():
    champion = _version("1", {"ok": [1.0] * 10, "length": [10.0] * 10, "flaky": [1.0, None] * 5})
    challenger = _version("2", {"ok": [1.0] * 8 + [0.0] * 2, "length": [12.0] * 10, "flaky": [None, 1.0] * 5})
    rows = {r.scorer: r for r in gate.compare(champion, challenger, threshold=0.1)}
    assert rows["ok"].champion == 1.0 and rows["ok"].challenger == 0.8 and round(rows["ok"].delta, 6) == -0.2
    assert rows["ok"].regressed and rows["ok"].rows == 10 and rows["ok"].low <= -0.2 <= rows["ok"].high <= 0
    assert rows["length"].delta == 2.0 and rows["length"].low == rows["length"].high == 2.0 and not rows["length"].regressed
    assert rows["flaky"].rows == 0 and rows["flaky"].low is None and not rows["flaky"].regressed
    # Within the threshold is no regression.
    assert not {r.scorer: r for r in gate.compare(champion, challenger, threshold=0.25)}["ok"].regressed
    summary = gate.markdown("main.m", champion, challenger, list(rows.values()), 0.1, "golden")
    assert "**FAILED**: version 2 regresses on ok" in summary and "| ok | 1.000 | 0.800 | -0.200 |" in summary


def test_values_of_an_evaluation_table_pair_rows_by_their_inputs():
    import pandas as pd

    table = pd.DataFrame({"request": [{"q": "a"}, {"q": "b"}, {"q": "a"}], "ok/value": ["yes", "no", True],
                          "n/value": [3, None, 1.5]})
    found = gate.values_of(table)
    assert found["ok"] == {'{"q": "a"}#1': 1.0, '{"q": "b"}#1': 0.0, '{"q": "a"}#2': 1.0}
    assert list(found["n"].values()) == [3.0, None, 1.5]


def test_scorers_are_named_module_colon_attribute(tmp_path):
    (tmp_path / "mine.py").write_text("from mlflow.genai.scorers import scorer\n\n@scorer\ndef one(outputs):\n"
                                      "    return True\n\nBOTH = [one, one]\nNOT_ONE = 3\n")
    assert [s.name for s in gate.load_scorers([f"{tmp_path / 'mine.py'}:BOTH"])] == ["one", "one"]
    for bad in ("mine", f"{tmp_path / 'mine.py'}:NOT_ONE", f"{tmp_path / 'mine.py'}:missing", "no_such_module:x"):
        with pytest.raises(InvalidParameter):
            gate.load_scorers([bad])


def test_a_batched_assessment_is_the_row_mlflows_own_create_assessment_writes(env):
    _scorer(env)
    built = make_record(0)
    spool(env, [(header("req-0", env.experiment_id), built)])
    env.writer().run_once()
    trace = env.store.get_trace(built["trace_id"])
    root = trace.data._get_root_span().span_id

    def feedback(name: str) -> Feedback:
        return Feedback(name=name, value=0.75, rationale="most of it", trace_id=trace.info.trace_id, span_id=root,
                        metadata={"k": "v"}, source=AssessmentSource(source_type="CODE", source_id="length"))

    env.store.create_assessment(feedback("by_mlflow"))
    [(seq,)] = sa.create_engine(env.url).connect().execute(sa.text("SELECT seq FROM aw_scoring_queue")).all()
    results.write(env.store, [results.Result(trace, "by_platform", None, [feedback("by_platform")], "ep", None, 0)], [seq])
    with env.engine.connect() as c:
        rows = {r.name: r._asdict() for r in c.execute(sa.text("SELECT * FROM assessments"))}
    varying = {"assessment_id", "name", "created_timestamp", "last_updated_timestamp"}
    assert {k: v for k, v in rows["by_platform"].items() if k not in varying} == \
           {k: v for k, v in rows["by_mlflow"].items() if k not in varying}
    assert rows["by_platform"]["aggregate_value"] == 0.75 and rows["by_platform"]["valid"]
