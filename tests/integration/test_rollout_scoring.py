"""A rollout gated by production monitoring: the guide's own scorer API registers a scorer on
the endpoint's experiment, the platform's online scoring runs it on both versions' live traces,
and the rollout's gate reads those assessments. No test code scores anything here."""

from __future__ import annotations

import threading
import uuid

import httpx
import mlflow
from mlflow.genai.scorers import ScorerSamplingConfig, delete_scorer, list_scorers, scorer

from agentwharf import agents
from agentwharf.agents import Gate, Rollout
from tests.integration.load import FIGURES
from tests.integration.platform_process import wait_until

BAD_PREFIX = "UNSAFE "


@scorer
def no_unsafe_words(outputs) -> bool:
    return "UNSAFE" not in str(outputs)


def _send_until(platform, endpoint: str, stop: threading.Event) -> None:
    body = {"input": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=30) as client:
        while not stop.wait(0.05):
            client.post(f"/serving-endpoints/{endpoint}/invocations", json=body)


def test_an_online_scorer_rolls_a_bad_candidate_back(platform, http, logged, custom_scorer_client):
    model = f"main.rollout.scored{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        mlflow.register_model(logged["info"], model)
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    experiment_id = http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["experiment_id"]
    mlflow.set_experiment(experiment_id=experiment_id)
    # The guide's step 8, unchanged, before the new version ships.
    no_unsafe_words.register(name="no_unsafe_words").start(sampling_config=ScorerSamplingConfig(sample_rate=1.0))
    stop = threading.Event()
    sender = threading.Thread(target=_send_until, args=(platform, endpoint, stop), daemon=True)
    try:
        sender.start()
        rollout = Rollout(canary_percent=10, min_requests=100, max_duration="10m",
                          gates=[Gate(scorer="no_unsafe_words", min_pass_rate=0.9, min_samples=10)])
        bad = agents.deploy(model, "2", environment_vars={"INFO_AGENT_PREFIX": BAD_PREFIX}, rollout=rollout)
        # The first custom scorer may start its sandbox cold (MLflow imported): minutes on a busy machine.
        done = wait_until(lambda: (r := agents.get_rollout(endpoint))["state"] != "RUNNING" and r, timeout=300,
                          interval=0.5, message="the rollout to decide")
    finally:
        stop.set()
        sender.join(timeout=30)
    try:
        assert done["state"] == "ROLLED_BACK", done["decisions"]
        assert "gate no_unsafe_words min_pass_rate=0.9 failed: pass rate 0.000" in done["decisions"][-1]["reason"]
        [gate] = done["window"]["gates"]
        assert gate["verdict"] == "FAIL" and gate["current"] == 1.0
        rows = http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table", params={"max_results": 10000}).json()["rows"]
        answered = sum(1 for row in rows if row["served_entity"] == bad.served_entity_name)
        FIGURES.append(f"rollout gated by online scoring: the bad version answered {answered} of {len(rows)} requests "
                       f"(canary 10%, gate min_samples 10) before its rollback")
        assert answered < 0.3 * len(rows)
        # The verdicts are the scorer's own assessments on the candidate's traces.
        trace_id = next(row["trace_id"] for row in rows if row["served_entity"] == bad.served_entity_name and row["trace_id"])
        verdicts = wait_until(lambda: [a for a in mlflow.get_trace(trace_id).info.assessments if a.name == "no_unsafe_words"] or None,
                              timeout=90, message="the scorer's assessment on a candidate trace")
        assert verdicts[0].value is False and verdicts[0].source.source_id == "no_unsafe_words"
    finally:
        for registered in list_scorers(experiment_id=experiment_id):
            delete_scorer(name=registered.name, experiment_id=experiment_id, version="all")
        agents.delete_deployment(model)
