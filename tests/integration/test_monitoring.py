"""Production monitoring (issue 14) on a real platform: the guide's step 8 unchanged (MLflow's
``Scorer.register/start/update/stop`` and ``list_scorers`` against the platform), its results on
live traces seconds later, custom ``@scorer`` code contained, and who may register scorers.

The judge model is the scripted OpenAI-compatible provider behind the platform's LLM endpoint
``judge`` (``AGENTWHARF_JUDGE_ENDPOINT`` in conftest), so ``Safety()`` runs unchanged."""

from __future__ import annotations

import json
import os
import time
import uuid

import httpx
import mlflow
import pytest
from mlflow.genai.scorers import ScorerSamplingConfig, Safety, delete_scorer, get_scorer, list_scorers, scorer

from tests.integration.conftest import deployed_info_agent
from tests.integration.platform_process import wait_until
from tests.llm_provider import ScriptedProvider

KEY = f"sk-aw-monitor-{uuid.uuid4().hex}"
#: The issue's target: p95 <= 15 s from the answer to a readable assessment (one answer here).
TARGET_SECONDS = 15.0


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
    saved = os.environ.get("MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS")
    os.environ["MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS"] = "true"
    yield
    if saved is None:
        os.environ.pop("MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS")
    else:
        os.environ["MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS"] = saved


@pytest.fixture(scope="module")
def live(logged, http, judge, custom_code_client):
    """The info agent deployed; (deployment, the endpoint's experiment id). Scorers registered
    by the tests are deleted afterwards."""
    model = f"main.monitor.agent{uuid.uuid4().hex[:6]}"
    with deployed_info_agent(logged, model) as deployment:
        experiment_id = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}").json()["experiment_id"]
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


def wait_for_assessments(trace_id: str, names: set[str], timeout: float = 60.0) -> dict[str, list]:
    return wait_until(lambda: (found := assessments(trace_id)) and names <= set(found) and found,
                      timeout=timeout, interval=0.2, message=f"assessments {sorted(names)} on {trace_id}")


# -- item 1: the guide's step 8, unchanged ------------------------------------------------------------


def test_guides_scorers_score_live_traces_within_seconds(live, http):
    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    safety = Safety().register(name="safety")
    safety = safety.start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    length = answer_length.register(name="answer_length")
    length = length.start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    listed = {s.name: s for s in list_scorers()}
    assert {"safety", "answer_length"} <= set(listed)
    assert listed["safety"].sample_rate == 1.0 and listed["answer_length"].sample_rate == 1.0

    # The first scorer started starts the platform's scoring process (MLflow imported, the
    # custom scorer's sandbox started): the first trace may wait for that (README).
    first, _ = answer(http, deployment)
    wait_for_assessments(first, {"safety", "answer_length"}, timeout=120)
    trace_id, arrived = answer(http, deployment)
    found = wait_for_assessments(trace_id, {"safety", "answer_length"}, timeout=TARGET_SECONDS * 2)
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
    # Half of the traffic.
    length = get_scorer(name="answer_length").update(sampling_config=ScorerSamplingConfig(sample_rate=0.5))
    assert length.sample_rate == 0.5 and {s.name: s.sample_rate for s in list_scorers()}["answer_length"] == 0.5
    time.sleep(2)  # the platform re-reads scorers' configurations every second

    sent = {}
    for i in range(40):
        user = "ada" if i % 2 else "bob"
        trace_id, _ = answer(http, deployment, f"hi {i}", user_id=user)
        sent[trace_id] = user
    # Safety (every trace) tells when scoring has reached each trace.
    for trace_id in sent:
        wait_for_assessments(trace_id, {"safety"})
    time.sleep(2)
    found = {trace_id: assessments(trace_id) for trace_id in sent}
    assert {t for t, names in found.items() if "says_hi" in names} == {t for t, user in sent.items() if user == "ada"}
    sampled = sum("answer_length" in names for names in found.values())
    assert 6 <= sampled <= 34, sampled  # 0.5 of 40 (p < 1e-5 of falling outside)

    greeting.stop()
    assert get_scorer(name="says_hi").sample_rate == 0.0
    time.sleep(2)
    trace_id, _ = answer(http, deployment, "hi again", user_id="ada")
    wait_for_assessments(trace_id, {"safety"})
    time.sleep(2)
    assert "says_hi" not in assessments(trace_id)


# -- item 2: custom scorer code is someone's code ------------------------------------------------------


def test_custom_scorers_that_fail_spin_sleep_or_hoard_are_contained(live, http):
    deployment, experiment_id = live
    mlflow.set_experiment(experiment_id=experiment_id)
    bad = {"raises": raises, "spins": spins, "sleeps": sleeps, "hoards": hoards, "snoops": snoops}
    for name, code in bad.items():
        code.register(name=name).start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    time.sleep(2)
    trace_id, arrived = answer(http, deployment, "hi from a busy day")
    # The others are not held up by them.
    wait_for_assessments(trace_id, {"safety"}, timeout=TARGET_SECONDS)
    found = wait_for_assessments(trace_id, set(bad), timeout=60)
    errors = {name: found[name][0].error for name in bad}
    assert errors["raises"].error_code == "SCORER_ERROR" and "this scorer always fails" in errors["raises"].error_message
    # CPU time (AGENTWHARF_SCORER_CPU_SECONDS=2) or the wall clock (..._TIMEOUT_SECONDS=4) ends it.
    assert errors["spins"].error_code in ("SCORER_CRASHED", "SCORER_TIMEOUT"), errors["spins"]
    assert errors["sleeps"].error_code == "SCORER_TIMEOUT" and "4s" in errors["sleeps"].error_message
    assert errors["hoards"].error_code == "SCORER_ERROR" and "MemoryError" in errors["hoards"].error_message
    assert "AGENTWHARF_SCORER_MEMORY_BYTES" in errors["hoards"].error_message
    for name in ("raises", "spins", "sleeps", "hoards"):
        assert found[name][0].source.source_type == "CODE" and found[name][0].source.source_id == name
    # No credential, no database, no platform variable reaches someone's code.
    seen = json.loads(found["snoops"][0].value)
    assert errors["snoops"] is None and seen["env"] == [], seen
    took = time.monotonic() - arrived
    assert took < 30, took

    # And the next trace is scored as fast as ever by the good ones.
    for name in bad:
        get_scorer(name=name).stop()
    time.sleep(2)
    trace_id, arrived = answer(http, deployment)
    wait_for_assessments(trace_id, {"safety"}, timeout=TARGET_SECONDS)


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
