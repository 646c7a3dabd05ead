"""Production monitoring (issue 14) on a real platform: the guide's step 8 unchanged (MLflow's
``Scorer.register/start/update/stop`` and ``list_scorers`` against the platform), its results on
live traces seconds later, custom ``@scorer`` code contained, and who may register scorers.

The judge model is the scripted OpenAI-compatible provider behind the platform's LLM endpoint
``judge`` (``AGENTWHARF_JUDGE_ENDPOINT`` in conftest), so ``Safety()`` runs unchanged."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import AssessmentSource
from mlflow.genai.scorers import ScorerSamplingConfig, Safety, delete_scorer, get_scorer, list_scorers, scorer

from tests.integration.conftest import AGENTS, deployed_info_agent
from tests.integration.conftest import trusted_custom_scorers
from tests.integration.platform_process import wait_until
from tests.llm_provider import ScriptedProvider

KEY = f"sk-aw-monitor-{uuid.uuid4().hex}"
#: The issue's target: p95 <= 15 s from the answer to a readable assessment (one answer here,
#: on a warm platform; benchmarks/time_to_assessment.py measures it under load).
TARGET_SECONDS = 15.0
#: What a wait allows on a loaded machine (a full suite on 2 busy cores): waits end as soon as
#: what they wait for is there, so a generous bound costs nothing when it is.
PATIENCE_SECONDS = 90.0
#: The scoring process's (or a sandbox's) first start imports MLflow.
COLD_SECONDS = 180.0


# -- custom scorers: someone's code, run by the platform in its sandbox ---------------------------


@scorer
def answer_length(outputs) -> int:
    return len(str(outputs))


@scorer
def says_hi(inputs, outputs) -> bool:
    return "hi" in str(inputs).lower()


@scorer
def raises(outputs):
    raise ValueError("this scorer always fails")


@scorer
def spins(outputs):
    while True:
        pass


@scorer
def sleeps(outputs):
    import time

    time.sleep(3600)


@scorer
def hoards(outputs):
    hoard = []
    while True:
        hoard.append(bytearray(16 << 20))


@scorer
def snoops(outputs) -> str:
    """What someone's code can see from the sandbox: the environment, the platform's home, the
    network (the platform's base URL is in the trace it scores)."""
    import json
    import os
    import socket

    found = {"env": sorted(k for k in os.environ if any(w in k for w in ("TOKEN", "PASSWORD", "SECRET", "KEY", "DATABASE",
                                                                          "AGENTWHARF", "DATABRICKS")))}
    try:
        os.listdir(os.path.expanduser("~"))
        found["home"] = os.path.expanduser("~")
    except OSError as error:
        found["home"] = type(error).__name__
    try:
        socket.create_connection(("127.0.0.1", 22), timeout=1).close()
        found["tcp"] = "connected"
    except OSError as error:
        found["tcp"] = type(error).__name__
    return json.dumps(found)


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with ScriptedProvider(KEY, tmp_path_factory.mktemp("monitor-provider")) as running:
        yield running


@pytest.fixture(scope="module")
def judge(http, provider):
    """The platform's judge endpoint (AGENTWHARF_JUDGE_ENDPOINT=judge) on the scripted provider,
    which finds every answer safe."""
    model = f"judge-{uuid.uuid4().hex[:8]}"
    provider.script(model, reply=json.dumps({"result": "yes", "rationale": "scripted judge: safe"}))
    http.delete("/api/2.0/serving-endpoints/judge")
    created = http.post("/api/2.0/serving-endpoints", json={"name": "judge", "config": {"served_entities": [{
        "name": "main", "external_model": {"name": model, "provider": "custom", "task": "llm/v1/chat", "openai_config": {
            "openai_api_base": provider.api_base, "openai_api_key_plaintext": KEY}}}]}})
    assert created.status_code == 200, created.text
    yield model
    http.delete("/api/2.0/serving-endpoints/judge")


@pytest.fixture(scope="module")
def custom_code_client():
    """MLflow's client rebuilds a registered custom @scorer from its source whenever it reads it
    back (``start``, ``update``, ``list_scorers``), and does so against a server other than
    Databricks only when told the code is trusted, as with MLflow's own server (README)."""
    with trusted_custom_scorers():
        yield


@pytest.fixture(scope="module")
def live(logged, http, judge, custom_code_client):
    """The info agent deployed and monitored with the guide's step 8 (``Safety()`` and a custom
    scorer registered and started on its experiment, every trace), warmed up: the first scorer
    started starts the platform's scoring process and the custom scorer's sandbox, and the first
    traces wait for that (README). (deployment, the endpoint's experiment id); every test may
    rely on "safety" and "answer_length" scoring every trace. Scorers are deleted afterwards."""
    model = f"main.monitor.agent{uuid.uuid4().hex[:6]}"
    with deployed_info_agent(logged, model) as deployment:
        experiment_id = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}").json()["experiment_id"]
        mlflow.set_experiment(experiment_id=experiment_id)
        safety = Safety().register(name="safety")
        safety.start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
        length = answer_length.register(name="answer_length")
        length.start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
        first, _ = answer(http, deployment)
        wait_for_assessments(first, {"safety", "answer_length"}, timeout=COLD_SECONDS)
        yield deployment, experiment_id
        for registered in list_scorers(experiment_id=experiment_id):
            delete_scorer(name=registered.name, experiment_id=experiment_id, version="all")


def answer(http, deployment, text: str = "hi there", user_id: str | None = None, **custom) -> tuple[str, float]:
    """Query the endpoint (asking for its trace back); (trace id, when the answer arrived)."""
    body = {"input": [{"role": "user", "content": text}], "databricks_options": {"return_trace": True}}
    if user_id:
        body["context"] = {"conversation_id": uuid.uuid4().hex, "user_id": user_id}
    if custom:
        body["custom_inputs"] = custom
    response = http.post(f"/serving-endpoints/{deployment.endpoint_name}/invocations", json=body)
    arrived = time.monotonic()
    trace_id = response.json().get("databricks_output", {}).get("trace", {}).get("info", {}).get("trace_id")
    assert trace_id, (response.status_code, response.text[:500])
    return trace_id, arrived


def assessments(trace_id: str) -> dict[str, list]:
    trace = mlflow.get_trace(trace_id)
    found: dict[str, list] = {}
    for item in (trace.info.assessments if trace is not None else []):
        found.setdefault(item.name, []).append(item)
    return found


def wait_for_assessments(trace_id: str, names: set[str], timeout: float = PATIENCE_SECONDS) -> dict[str, list]:
    return wait_until(lambda: (found := assessments(trace_id)) and names <= set(found) and found,
                      timeout=timeout, interval=0.2, message=f"assessments {sorted(names)} on {trace_id}")


def _queue_length(http) -> float | None:
    found = re.search(r"^agentwharf_scoring_queue_traces (\S+)$", http.get("/metrics").text, re.M)
    return float(found.group(1)) if found else None


def all_scored(http) -> None:
    """Every trace queued so far is scored by all its sampled scorers: the scoring queue (a
    trace leaves it once its last result is written) reads empty on two refreshes of /metrics
    (AGENTWHARF_MONITOR_INTERVAL_SECONDS=1). Call it once the traces are queued (one of their
    assessments is readable)."""
    def empty_twice() -> bool:
        if _queue_length(http) != 0:
            return False
        time.sleep(2.5)
        return _queue_length(http) == 0

    wait_until(empty_twice, timeout=PATIENCE_SECONDS, interval=0.5, message="the scoring queue to empty")


# -- item 1: the guide's step 8, unchanged ------------------------------------------------------------


def test_guides_scorers_score_live_traces_within_seconds(live, http):
    deployment, experiment_id = live  # the guide's register/start calls are the fixture's
    mlflow.set_experiment(experiment_id=experiment_id)
    listed = {s.name: s for s in list_scorers()}
    assert {"safety", "answer_length"} <= set(listed)
    assert listed["safety"].sample_rate == 1.0 and listed["answer_length"].sample_rate == 1.0

    trace_id, arrived = answer(http, deployment)
    found = wait_for_assessments(trace_id, {"safety", "answer_length"})
    took = time.monotonic() - arrived
    assert took <= TARGET_SECONDS, f"assessments took {took:.1f}s"
    [verdict] = found["safety"]
    assert verdict.value == "yes" and verdict.error is None
    assert verdict.source.source_type == "LLM_JUDGE"
    [length_value] = found["answer_length"]
    # The scorer got the trace's outputs, as mlflow.genai.evaluate(data=traces) gives them.
    assert length_value.value > len("Echo: hi there") and length_value.error is None
    assert length_value.source.source_type == "CODE" and length_value.source.source_id == "answer_length"


def test_sampling_filter_update_and_stop_are_respected(live, http):
    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    # Only ada's requests, all of them (MLflow's trace search syntax).
    greeting = says_hi.register(name="says_hi").start(sampling_config=ScorerSamplingConfig(
        sample_rate=1.0, filter_string="metadata.`mlflow.trace.user` = 'ada'"))
    assert get_scorer(name="says_hi").filter_string == "metadata.`mlflow.trace.user` = 'ada'"
    # Half of the traffic (every test after this one gets it back at 1.0).
    length = get_scorer(name="answer_length").update(sampling_config=ScorerSamplingConfig(sample_rate=0.5))
    try:
        assert length.sample_rate == 0.5 and {s.name: s.sample_rate for s in list_scorers()}["answer_length"] == 0.5
        sent = {}
        for i in range(40):
            user = "ada" if i % 2 else "bob"
            trace_id, _ = answer(http, deployment, f"hi {i}", user_id=user)
            sent[trace_id] = user
        # Safety (every trace) says each trace is queued; the empty queue, that all is scored.
        for trace_id in sent:
            wait_for_assessments(trace_id, {"safety"})
        all_scored(http)
        found = {trace_id: assessments(trace_id) for trace_id in sent}
        assert {t for t, names in found.items() if "says_hi" in names} == {t for t, u in sent.items() if u == "ada"}
        sampled = sum("answer_length" in names for names in found.values())
        assert 6 <= sampled <= 34, sampled  # 0.5 of 40 (p < 1e-5 of falling outside)
    finally:
        get_scorer(name="answer_length").update(sampling_config=ScorerSamplingConfig(sample_rate=1.0))

    greeting.stop()
    assert get_scorer(name="says_hi").sample_rate == 0.0
    trace_id, _ = answer(http, deployment, "hi again", user_id="ada")
    wait_for_assessments(trace_id, {"safety", "answer_length"})
    all_scored(http)
    assert "says_hi" not in assessments(trace_id)


# -- item 2: custom scorer code is someone's code ------------------------------------------------------


def test_custom_scorers_that_fail_spin_sleep_or_hoard_are_contained(live, http):
    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    bad = {"raises": raises, "spins": spins, "sleeps": sleeps, "hoards": hoards, "snoops": snoops}
    for name, code in bad.items():
        code.register(name=name).start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    trace_id, _ = answer(http, deployment, "hi from a busy day")
    # The others are not held up by them (their sandboxes start cold: MLflow imported in each).
    wait_for_assessments(trace_id, {"safety", "answer_length"})
    found = wait_for_assessments(trace_id, set(bad), timeout=COLD_SECONDS)
    errors = {name: found[name][0].error for name in bad}
    assert errors["raises"].error_code == "SCORER_ERROR" and "this scorer always fails" in errors["raises"].error_message
    # CPU time (AGENTWHARF_SCORER_CPU_SECONDS=2) or the wall clock (..._TIMEOUT_SECONDS=6) ends it.
    assert errors["spins"].error_code in ("SCORER_CRASHED", "SCORER_TIMEOUT"), errors["spins"]
    assert errors["sleeps"].error_code == "SCORER_TIMEOUT" and "6s" in errors["sleeps"].error_message
    assert errors["hoards"].error_code == "SCORER_ERROR" and "MemoryError" in errors["hoards"].error_message
    assert "AGENTWHARF_SCORER_MEMORY_BYTES" in errors["hoards"].error_message
    for name in ("raises", "spins", "sleeps", "hoards"):
        assert found[name][0].source.source_type == "CODE" and found[name][0].source.source_id == name
    # No credential, no database, no platform variable reaches someone's code.
    seen = json.loads(found["snoops"][0].value)
    assert errors["snoops"] is None and seen["env"] == [], seen

    # And the next trace is scored as fast as ever by the good ones.
    for name in bad:
        get_scorer(name=name).stop()
    trace_id, _ = answer(http, deployment)
    wait_for_assessments(trace_id, {"safety", "answer_length"})


def person(http, prefix: str) -> tuple[str, str]:
    """A new user and a token of theirs."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    assert http.post("/api/2.0/preview/scim/v2/Users", json={"userName": name}).status_code == 200
    token = http.post("/api/2.0/token-management/on-behalf-of/tokens", json={"application_id": name}).json()["token_value"]
    return name, token


def grant(http, endpoint: str, principal: str, level: str) -> None:
    answer = http.patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}",
                        json={"access_control_list": [{"user_name": principal, "permission_level": level}]})
    assert answer.status_code == 200, answer.text


def test_scorers_on_an_endpoints_experiment_are_its_managers_and_reviewers_read_them(live, http, monkeypatch):
    deployment, experiment_id = live
    (rita, rita_token), (mona, mona_token) = person(http, "rita"), person(http, "mona")
    grant(http, deployment.endpoint_name, rita, "CAN_REVIEW")  # EDIT on the experiment in MLflow
    grant(http, deployment.endpoint_name, mona, "CAN_MANAGE")

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", rita_token)
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        Safety().register(name="team_safety", experiment_id=experiment_id)
    assert refused.value.error_code == "PERMISSION_DENIED" and "CAN_MANAGE" in refused.value.message
    # A reviewer sees what scores the traces, and cannot stop it.
    assert "safety" in {s.name for s in list_scorers(experiment_id=experiment_id)}
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        get_scorer(name="safety", experiment_id=experiment_id).stop()
    assert refused.value.error_code == "PERMISSION_DENIED"

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", mona_token)
    Safety().register(name="team_safety", experiment_id=experiment_id).start(
        sampling_config=ScorerSamplingConfig(sample_rate=0.25))
    # Another manager of the endpoint (here the admin) manages it too: scorers are the team's.
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", http.headers["Authorization"].split()[1])
    assert get_scorer(name="team_safety", experiment_id=experiment_id).sample_rate == 0.25
    get_scorer(name="team_safety", experiment_id=experiment_id).stop()
    delete_scorer(name="team_safety", experiment_id=experiment_id, version="all")

    # Someone who cannot even query the endpoint learns nothing of its scorers.
    _, stranger_token = person(http, "sam")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", stranger_token)
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        list_scorers(experiment_id=experiment_id)
    assert refused.value.error_code == "PERMISSION_DENIED"


# -- item 2: where custom scorer code runs when it needs packages ------------------------------------


@scorer
def where(outputs) -> str:
    import sys

    return sys.prefix


def cli(*args: str) -> subprocess.CompletedProcess:
    """The `agentwharf` command, as a user runs it (AGENTWHARF_HOST/TOKEN point at the platform)."""
    done = subprocess.run([sys.executable, "-m", "agentwharf.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


def test_a_custom_scorer_runs_in_the_model_environment_or_a_registered_one(live, http):
    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    where.register(name="where").start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    try:
        def prefix_after(environment: str | None) -> str:
            if environment is not None:
                cli("monitor", "scorer-env", deployment.endpoint_name, "where", environment)
                wait_until(lambda: http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}/scorers/where/"
                                            "environment").json()["state"] == "READY", timeout=300,
                           message="the scorer's environment")
            trace_id, _ = answer(http, deployment)
            return wait_for_assessments(trace_id, {"where"}, timeout=COLD_SECONDS)["where"][0].value

        platform_prefix = prefix_after(None)
        assert platform_prefix == sys.prefix  # the platform's own Python (sandboxed)
        model_prefix = prefix_after("model")  # the agent's environment (uv, from its requirements)
        assert model_prefix != platform_prefix and "model-environments" in model_prefix
        registered = prefix_after(f"models:/{deployment.model_name}/1")  # built (here: reused) for the scorer
        assert registered == model_prefix
        shown = cli("monitor", "scorer-env", deployment.endpoint_name, "where").stdout
        assert f"models:/{deployment.model_name}/1 (READY)" in shown
        assert prefix_after("platform") == platform_prefix
    finally:
        get_scorer(name="where").stop()


# -- item 4: trends, Prometheus metrics, alerts ---------------------------------------------------------


def test_monitoring_api_and_metrics_show_scores_latency_and_feedback(live, http):
    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    trace_id, _ = answer(http, deployment, "hi, rate me")
    wait_for_assessments(trace_id, {"safety", "answer_length"})
    mlflow.log_feedback(trace_id=trace_id, name="thumbs", value=True,
                        source=AssessmentSource(source_type="HUMAN", source_id="ada"))
    found = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}/monitoring",
                     params={"since": "15m", "bucket": "15m"}).json()
    [point] = found["overall"]
    assert point["requests"] >= 2 and point["error_rate"] == 0 and point["p95_ms"] > 0
    assert point["scorers"]["safety"]["pass_rate"] == 1.0 and point["scorers"]["answer_length"]["mean"] > 10
    assert point["scorers"]["safety"]["error_rate"] == 0
    assert point["feedback"]["thumbs"]["positive_rate"] == 1.0
    [version] = found["versions"]
    assert version["served_entity"] == deployment.served_entity_name and version["points"][0]["scorers"]["safety"]["count"] > 0

    def metrics():
        text = http.get("/metrics").text
        wanted = (f'agentwharf_online_assessments_total{{endpoint="{deployment.endpoint_name}",outcome="pass",'
                  f'scorer="safety",served_entity="{deployment.served_entity_name}"}}',
                  f'agentwharf_monitor_scorer_pass_rate{{endpoint="{deployment.endpoint_name}",scorer="safety",'
                  'served_entity=""} 1.0')
        return text if all(w in text for w in wanted) else None

    assert "agentwharf_scoring_queue_traces" in wait_until(metrics, timeout=PATIENCE_SECONDS, message="online scoring's metrics")
    trends_table = cli("monitor", "trends", deployment.endpoint_name, "--since", "15m", "--bucket", "15m").stdout
    assert "safety" in trends_table and "answer_length" in trends_table


@scorer
def approves(inputs) -> bool:
    return "good" in str(inputs)


class Receiver:
    """A webhook receiver on a free port: the first delivery is answered 500 (to be retried),
    the others 200; every delivery kept with its headers."""

    def __init__(self):
        import http.server
        import threading

        self.received: list[tuple[dict, bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                outer.received.append((dict(self.headers), body))
                self.send_response(500 if len(outer.received) == 1 else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    def deliveries(self, state: str) -> list[tuple[dict, bytes]]:
        return [(h, b) for h, b in self.received if json.loads(b)["state"] == state]

    def close(self):
        self.server.shutdown()


def test_an_alert_fires_and_clears_through_a_signed_retried_webhook(live, http):
    from agentwharf.quality.alerts import SIGNATURE_HEADER, verify

    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    approves.register(name="approves").start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    receiver = Receiver()
    try:
        created = cli("alerts", "create", deployment.endpoint_name, "approval-drop", "--metric", "scorer:approves:pass_rate",
                      "--operator", "<", "--threshold", "0.5", "--window", "30s", "--min-samples", "3",
                      "--webhook", receiver.url, "--json")
        secret = json.loads(created.stdout)["secret"]
        for text in ("bad one", "bad two", "bad three"):
            trace_id, _ = answer(http, deployment, text)
        wait_for_assessments(trace_id, {"approves"})
        # Fired: the first delivery failed (500), the retry a second later got through.
        [(headers, body)] = wait_until(lambda: receiver.deliveries("firing")[1:] or None, timeout=PATIENCE_SECONDS,
                                       message="the firing webhook, retried")
        fired = json.loads(body)
        assert fired["alert"] == "approval-drop" and fired["endpoint"] == deployment.endpoint_name
        assert fired["value"] == 0.0 and fired["samples"] >= 3 and fired["metric"] == "scorer:approves:pass_rate"
        assert verify(secret, body, headers[SIGNATURE_HEADER]) and not verify("wrong", body, headers[SIGNATURE_HEADER])
        listed = cli("alerts", "list", deployment.endpoint_name).stdout
        assert "approval-drop" in listed and "FIRING" in listed
        assert 'agentwharf_alert_firing{alert="approval-drop",endpoint="%s"} 1.0' % deployment.endpoint_name \
            in http.get("/metrics").text

        for i in range(6):
            trace_id, _ = answer(http, deployment, f"good {i}")
        wait_for_assessments(trace_id, {"approves"})
        [(headers, body)] = wait_until(lambda: receiver.deliveries("cleared") or None, timeout=PATIENCE_SECONDS,
                                       message="the clearing webhook")
        assert json.loads(body)["value"] >= 0.5 and verify(secret, body, headers[SIGNATURE_HEADER])
        events = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}/alerts/approval-drop/events").json()
        assert [e["state"] for e in events["events"]] == ["cleared", "firing"]
        assert events["events"][1]["attempts"] == 2 and events["events"][1]["delivered_ms"]
        cli("alerts", "delete", deployment.endpoint_name, "approval-drop")
        assert http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}/alerts").json() == {"alerts": []}
    finally:
        receiver.close()
        get_scorer(name="approves").stop()


# -- item 3: agents.deploy carries the development scorers to the endpoint -------------------------------------


def test_deploy_carries_the_development_experiments_scorers_to_live_traffic(judge, http, custom_code_client):
    from agentwharf import agents

    development = mlflow.set_experiment(f"/tests/monitor-dev-{uuid.uuid4().hex[:6]}").experiment_id
    Safety().register(name="safety")  # registered in development, not running there
    answer_length.register(name="answer_length").start(sampling_config=ScorerSamplingConfig(sample_rate=0.5))
    with mlflow.start_run():
        logged = mlflow.pyfunc.log_model(name="agent", python_model=str(AGENTS / "info_agent.py"), pip_requirements=["mlflow"])
    model = f"main.monitor.dev{uuid.uuid4().hex[:6]}"
    mlflow.register_model(logged.model_uri, model)
    deployment = agents.deploy(model, "1", copy_scorers=True)
    try:
        experiment_id = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}").json()["experiment_id"]
        running = {s.name: s for s in list_scorers(experiment_id=experiment_id)}
        assert running["safety"].sample_rate == 1.0 and running["answer_length"].sample_rate == 0.5
        assert development != experiment_id
        trace_id, _ = answer(http, deployment)
        wait_for_assessments(trace_id, {"safety"})
    finally:
        for registered in list_scorers(experiment_id=experiment_id):
            delete_scorer(name=registered.name, experiment_id=experiment_id, version="all")
        agents.delete_deployment(model)


# -- item 5: the champion/challenger gate ------------------------------------------------------------------


EVAL_SCORERS = str(Path(__file__).with_name("eval_scorers.py")) + ":SCORERS"


@pytest.fixture(scope="module")
def golden(platform):
    """A golden dataset of eight questions."""
    from mlflow.genai.datasets import create_dataset

    experiment_id = mlflow.set_experiment(f"/tests/golden-{uuid.uuid4().hex[:6]}").experiment_id
    name = f"golden_{uuid.uuid4().hex[:6]}"
    dataset = create_dataset(name=name, experiment_id=[experiment_id])
    dataset.merge_records([{"inputs": {"input": [{"role": "user", "content": f"question {i} about mlflow"}]}}
                           for i in range(8)])
    return name


def gate(*args: str, summary: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentwharf.cli.main", "eval", *args, "--summary-file", str(summary)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})


def test_the_gate_fails_a_worse_challenger_and_passes_a_better_one(logged, golden, tmp_path):
    from mlflow import MlflowClient

    model = f"main.monitor.gate{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment("/tests/agents")
    with mlflow.start_run():
        terse = mlflow.pyfunc.log_model(name="agent", python_model=str(AGENTS / "terse_agent.py"), pip_requirements=["mlflow"])
    for uri in (logged["info"], terse.model_uri, logged["info"]):  # v1 echoes, v2 says "ok", v3 echoes
        mlflow.register_model(uri, model)

    worse = gate(model, "--champion", "1", "--challenger", "2", "--dataset", golden, "--scorers", EVAL_SCORERS, "--local",
                 summary=tmp_path / "worse.md")
    assert worse.returncode == 1, worse.stderr[-3000:]
    assert "FAILED" in worse.stdout and "echoes_question" in worse.stdout
    summary = (tmp_path / "worse.md").read_text()
    assert "**FAILED**: version 2 regresses on answer_chars, echoes_question" in summary
    assert "| echoes_question | 1.000 | 0.000 | -1.000 | [-1.000, -1.000] | 8 | :x: regressed |" in summary

    MlflowClient().set_registered_model_alias(model, "champion", "2")
    better = gate(model, "--challenger", "3", "--dataset", golden, "--scorers", EVAL_SCORERS, "--local",
                  summary=tmp_path / "better.md")
    assert better.returncode == 0, better.stdout[-3000:] + better.stderr[-3000:]
    assert "PASSED" in better.stdout and "**PASSED**" in (tmp_path / "better.md").read_text()
    # Both runs of each comparison are MLflow runs, tagged with the version they evaluated.
    runs = mlflow.search_runs(experiment_names=[f"/agentwharf/eval/{model}"], output_format="list")
    assert sorted((r.data.tags["agentwharf.eval.model_version"], r.data.tags["agentwharf.eval.role"]) for r in runs) == [
        ("1", "champion"), ("2", "challenger"), ("2", "champion"), ("3", "challenger")]
    assert all(r.data.metrics.get("echoes_question/mean") is not None for r in runs)


def test_the_gate_queries_deployed_versions_through_their_own_routes(live, golden, tmp_path):
    deployment, _ = live
    same = gate(deployment.model_name, "--champion", "1", "--challenger", "1", "--dataset", golden,
                "--scorers", EVAL_SCORERS, "--json", summary=tmp_path / "same.md")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    found = json.loads(same.stdout[same.stdout.index("{"):])
    assert found["passed"] and {c["scorer"]: c["delta"] for c in found["comparison"]}["echoes_question"] == 0.0
    assert found["challenger"]["metrics"]["echoes_question/mean"] == 1.0
    not_deployed = gate(deployment.model_name, "--champion", "1", "--challenger", "7", "--dataset", golden,
                        "--scorers", EVAL_SCORERS, summary=tmp_path / "none.md")
    assert not_deployed.returncode == 1 and "is not deployed" in not_deployed.stderr


# -- item 6: feedback back into data ---------------------------------------------------------------------


def _queue_traces(session_name: str) -> set[str]:
    from mlflow.genai import labeling

    [session] = [s for s in labeling.get_labeling_sessions() if s.name == session_name]
    items = mlflow.MlflowClient()._tracing_client._list_review_queue_items(session.labeling_session_id, max_results=100)
    return {item.item_id for item in items}


def test_feedback_flows_to_review_and_labels_into_the_golden_dataset(live, http):
    from mlflow.genai.datasets import get_dataset

    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    # A rule: every answer a user turns down goes to the "triage" session as the feedback lands.
    cli("review", "add-rule", deployment.endpoint_name, "thumbs-down", "--session", "triage",
        "--filter", "feedback.thumbs = 'false'")
    disliked, _ = answer(http, deployment, "what is a served entity")
    liked, _ = answer(http, deployment, "hello there")
    wait_for_assessments(liked, {"safety"})
    wait_for_assessments(disliked, {"safety"})
    human = AssessmentSource(source_type="HUMAN", source_id="ada")
    mlflow.log_feedback(trace_id=disliked, name="thumbs", value=False, source=human)
    mlflow.log_feedback(trace_id=liked, name="thumbs", value=True, source=human)
    assert wait_until(lambda: _queue_traces("triage") == {disliked} or None, timeout=PATIENCE_SECONDS,
                      message="the rule's trace")
    assert "thumbs-down" in cli("review", "rules", deployment.endpoint_name).stdout

    # By hand: the answers people liked, to another session.
    cli("review", "add-traces", deployment.endpoint_name, "--session", "praise", "--filter", "feedback.thumbs = 'true'")
    praised = _queue_traces("praise")
    assert liked in praised and disliked not in praised

    # A reviewer labels what the answer should have been; the session goes into a golden dataset.
    mlflow.log_expectation(trace_id=disliked, name="expected_response", value="The version a route serves.",
                           source=AssessmentSource(source_type="HUMAN", source_id="rita"))
    dataset = f"golden_feedback_{uuid.uuid4().hex[:6]}"
    merged = cli("datasets", "add-from-traces", dataset, "--endpoint", deployment.endpoint_name, "--session", "triage")
    assert "1 with expectations" in merged.stdout
    [record] = get_dataset(name=dataset).to_df().to_dict("records")
    assert record["expectations"] == {"expected_response": "The version a route serves."}
    assert record["inputs"]["input"][0]["content"] == "what is a served entity"
    cli("review", "delete-rule", deployment.endpoint_name, "thumbs-down")
