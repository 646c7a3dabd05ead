"""Quality-gated rollouts on a real platform: a new version earns its traffic or is rolled back
by itself. The scripted agents differ by their environment: one answers well, one's answers
fail the ``quality`` scorer, one is slower. The scorer here is code that reads each new
inference row and logs its feedback on the row's trace through MLflow's own API, as any
scorer's result lands; the gates read whatever feedback is on the traces."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import mlflow
import pytest
from mlflow.entities import AssessmentSource

from agentwharf import agents, names
from agentwharf.agents import Gate, Rollout
from agentwharf.errors import AgentwharfError
from tests.integration.conftest import own_platform_with_info_agent
from tests.integration.load import FIGURES
from tests.integration.platform_process import wait_until

BAD_PREFIX = "UNSAFE "


class Traffic:
    """Steady requests to an endpoint, and the ``quality`` scorer on what they answered."""

    def __init__(self, platform, endpoint: str):
        self.platform, self.endpoint = platform, endpoint
        self.stop = threading.Event()
        self.scored: set[str] = set()
        self.failure: Exception | None = None
        self.since = 0
        self.threads = [threading.Thread(target=self._send, daemon=True), threading.Thread(target=self._score, daemon=True)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert self.failure is None, f"the scorer failed: {self.failure!r}"

    def _send(self) -> None:
        body = {"input": [{"role": "user", "content": "hello"}]}
        with httpx.Client(base_url=self.platform.base_url, headers=self.platform.headers, timeout=30) as client:
            # ~15 requests a second: what the scorer (one MLflow call per trace) keeps up with.
            while not self.stop.wait(0.06):
                try:
                    client.post(f"/serving-endpoints/{self.endpoint}/invocations", json=body)
                except httpx.TimeoutException:
                    # A version still loading (after a restart, on a busy machine) may hold a
                    # request past the client's timeout; the traffic goes on.
                    continue

    def _score(self) -> None:
        try:
            self._score_rows()
        except Exception as error:  # surfaced by __exit__: a silent scorer would look like a waiting gate
            self.failure = error

    def _score_rows(self) -> None:
        with httpx.Client(base_url=self.platform.base_url, headers=self.platform.headers, timeout=30) as http:
            while not self.stop.wait(0.3):
                rows = http.get(f"/api/2.0/serving-endpoints/{self.endpoint}/inference-table",
                                params={"max_results": 5000, "since": str(self.since)}).json()["rows"]
                for row in rows:
                    self.since = max(self.since, row["timestamp_ms"] - 5000)
                    if row["trace_id"] and row["trace_id"] not in self.scored and row["status_code"] == 200:
                        passed = BAD_PREFIX not in (row["response"] or "")
                        mlflow.log_feedback(trace_id=row["trace_id"], name="quality", value=passed,
                                            source=AssessmentSource(source_type="CODE", source_id="quality"))
                        self.scored.add(row["trace_id"])


def _versions(logged: dict[str, str], count: int) -> str:
    model = f"main.rollout.m{uuid.uuid4().hex[:6]}"
    for _ in range(count):
        mlflow.register_model(logged["info"], model)
    return model


def _answered_by(http: httpx.Client, endpoint: str) -> dict[str, int]:
    rows = http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table", params={"max_results": 10000}).json()["rows"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["served_entity"]] = counts.get(row["served_entity"], 0) + 1
    return counts


def _traffic(http: httpx.Client, endpoint: str) -> dict[str, int]:
    routes = http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["config"]["traffic_config"]["routes"]
    return {r["served_model_name"]: r["traffic_percentage"] for r in routes}


def _settled(endpoint: str, timeout: float = 150):
    try:
        return wait_until(lambda: (r := agents.get_rollout(endpoint))["state"] != "RUNNING" and r, timeout=timeout,
                          interval=0.5, message="the rollout to decide")
    except AssertionError:
        raise AssertionError(f"the rollout did not decide in {timeout}s: {json.dumps(agents.get_rollout(endpoint), indent=1)}") from None


class Webhook:
    """A receiver for the rollout's notify_url."""

    def __init__(self):
        events = self.events = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def test_a_good_candidate_is_promoted_step_by_step(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    rollout = Rollout(canary_percent=20, min_requests=15, max_duration="5m",
                      gates=[Gate(scorer="quality", min_pass_rate=0.9, min_samples=10), Gate(metric="error_rate", max=0.05),
                             Gate(metric="p95_latency_ms", max_ratio=3.0)])
    with Traffic(platform, first.endpoint_name):
        second = agents.deploy(model, "2", rollout=rollout)
        assert _traffic(http, first.endpoint_name) == {first.served_entity_name: 80, second.served_entity_name: 20}
        done = _settled(first.endpoint_name)
    assert done["state"] == "PROMOTED", done["decisions"]
    assert [d["action"] for d in done["decisions"]] == ["START", "STEP", "PROMOTE"]
    assert [d["percent"] for d in done["decisions"]] == [20, 50, 100]
    assert "every gate held" in done["decisions"][-1]["reason"]
    assert _traffic(http, first.endpoint_name) == {first.served_entity_name: 0, second.served_entity_name: 100}
    # The decision is on the model version in MLflow, with its reason.
    tag = mlflow.MlflowClient().get_model_version(model, "2").tags["agentwharf.rollout"]
    assert tag.startswith("PROMOTED PROMOTE at 100%") and "every gate held" in tag
    agents.delete_deployment(model)


def test_a_candidate_failing_a_scorer_is_rolled_back_by_itself(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    hook = Webhook()
    rollout = Rollout(canary_percent=10, min_requests=100, max_duration="5m", notify_url=hook.url,
                      gates=[Gate(scorer="quality", min_pass_rate=0.9, min_samples=10)])
    with Traffic(platform, first.endpoint_name):
        bad = agents.deploy(model, "2", environment_vars={"INFO_AGENT_PREFIX": BAD_PREFIX}, rollout=rollout)
        done = _settled(first.endpoint_name)
        time.sleep(2)  # traffic goes on after the rollback: none of it may reach the bad version
    assert done["state"] == "ROLLED_BACK", done["decisions"]
    assert "gate quality min_pass_rate=0.9 failed: pass rate 0.000" in done["decisions"][-1]["reason"]
    assert _traffic(http, first.endpoint_name) == {first.served_entity_name: 100, bad.served_entity_name: 0}
    answered = _answered_by(http, first.endpoint_name)
    total = sum(answered.values())
    FIGURES.append(f"rollout: a version failing its scorer answered {answered.get(bad.served_entity_name, 0)} of "
                   f"{total} requests (canary 10%, gate min_samples 10) before its rollback")
    # Bounded by the canary share: it answered a few more than the gate needed, never the bulk.
    assert answered.get(bad.served_entity_name, 0) <= 60 and answered.get(bad.served_entity_name, 0) < 0.3 * total
    # Still served at 0% for inspection, on its own route.
    probe = http.post(bad.query_endpoint, json={"input": [{"role": "user", "content": "why"}]})
    assert probe.status_code == 200 and probe.json()["output"][0]["content"][0]["text"].startswith(BAD_PREFIX)
    wait_until(lambda: any(e["event"] == "rollout.rollback" for e in hook.events), timeout=30, message="the webhook")
    event = next(e for e in hook.events if e["event"] == "rollout.rollback")
    assert event["state"] == "ROLLED_BACK" and event["candidate"] == bad.served_entity_name
    agents.delete_deployment(model)


def test_a_slower_candidate_fails_the_latency_gate(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    rollout = Rollout(canary_percent=30, min_requests=500, max_duration="5m",
                      gates=[Gate(metric="p95_latency_ms", max_ratio=2.0, min_samples=15)])
    with Traffic(platform, first.endpoint_name):
        agents.deploy(model, "2", environment_vars={"INFO_AGENT_SLEEP": "0.08"}, rollout=rollout)
        done = _settled(first.endpoint_name)
    assert done["state"] == "ROLLED_BACK", done["decisions"]
    assert "gate p95_latency_ms max_ratio=2.0 failed" in done["decisions"][-1]["reason"]
    gate = done["window"]["gates"][0]
    assert gate["candidate"] >= 80 and gate["verdict"] == "FAIL"
    agents.delete_deployment(model)


def test_one_rollout_at_a_time_and_manual_promote_abort(platform, http, logged, tmp_path):
    from tests.integration.test_restart_and_cli import cli

    model = _versions(logged, 3)
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    waiting = Rollout(canary_percent=10, min_requests=10_000, gates=[Gate(metric="error_rate", max=0.5)])
    second = agents.deploy(model, "2", rollout=waiting)
    with pytest.raises(AgentwharfError) as refused:
        agents.deploy(model, "3", rollout=waiting)
    assert refused.value.error_code == "RESOURCE_CONFLICT" and "in progress" in refused.value.message
    with pytest.raises(AgentwharfError) as plain:
        agents.deploy(model, "3")
    assert plain.value.error_code == "RESOURCE_CONFLICT"
    status = cli(platform.base_url, "rollout", "status", endpoint)
    assert status.returncode == 0 and "RUNNING" in status.stdout and "error_rate" in status.stdout
    aborted = cli(platform.base_url, "rollout", "abort", endpoint)
    assert aborted.returncode == 0, aborted.stderr
    assert agents.get_rollout(endpoint)["state"] == "ABORTED"
    assert _traffic(http, endpoint) == {first.served_entity_name: 100, second.served_entity_name: 0}
    # Again with the third version, promoted by hand from the CLI's deploy --canary.
    deployed = cli(platform.base_url, "deploy", model, "3", "--canary", "25", "--gate", "error_rate<=0.5",
                   "--min-requests", "10000")
    assert deployed.returncode == 0, deployed.stderr
    assert "rollout status" in deployed.stdout
    assert cli(platform.base_url, "rollout", "promote", endpoint).returncode == 0
    done = agents.get_rollout(endpoint)
    assert done["state"] == "PROMOTED" and done["decisions"][-1]["reason"].startswith("promoted by ")
    assert _traffic(http, endpoint)[names.served_entity_name(model, "3")] == 100
    nothing = cli(platform.base_url, "rollout", "abort", endpoint)
    assert nothing.returncode != 0 and "no rollout in progress" in nothing.stderr
    agents.delete_deployment(model)


def test_deleting_the_candidate_aborts_the_rollout(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    agents.deploy(model, "2", rollout=Rollout(canary_percent=10, min_requests=10_000, gates=[Gate(metric="error_rate", max=0.5)]))
    agents.delete_deployment(model, "2")
    done = _settled(first.endpoint_name, timeout=30)
    assert done["state"] == "ABORTED" and "no longer served" in done["decisions"][-1]["reason"]
    agents.delete_deployment(model)


def test_bad_rollout_requests_are_refused_with_the_reason(platform, http, logged):
    model = _versions(logged, 2)
    first_alone = http.post("/api/2.0/agents/deployments:deploy", json={
        "model_name": model, "model_version": "1", "rollout": {"gates": [{"metric": "error_rate", "max": 0.1}]}})
    assert first_alone.status_code == 400 and "needs a version already serving" in first_alone.json()["message"]
    agents.deploy(model, "1")
    bad = http.post("/api/2.0/agents/deployments:deploy", json={
        "model_name": model, "model_version": "2", "rollout": {"gates": [{"metric": "cpu", "max": 1}]}})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "metric must be one of" in bad.json()["message"]
    assert http.get("/api/2.0/serving-endpoints/nope/rollout").status_code == 404
    agents.delete_deployment(model)


def test_a_rollout_survives_a_restart_of_the_platform(tmp_path, logged):
    """State is in the database: after a restart the rollout carries on and decides."""
    with own_platform_with_info_agent(tmp_path / "home", "/tests/rollout-restart",
                                      {"AGENTWHARF_ROLLOUT_INTERVAL_SECONDS": "0.5"}) as (own, uri):
        model = "main.rollout.restart"
        for _ in range(2):
            mlflow.register_model(uri, model)
        first = agents.deploy(model, "1")
        rollout = Rollout(canary_percent=50, min_requests=10, max_duration="10m",
                          gates=[Gate(metric="error_rate", max=0.1)])
        second = agents.deploy(model, "2", rollout=rollout)
        own.stop()
        own.start()
        assert agents.get_rollout(first.endpoint_name)["state"] == "RUNNING"
        # Both versions, which share one built environment, are back: a version whose start
        # ended in silence would stay not ready here (and its requests would wait).
        served = lambda: httpx.get(f"{own.base_url}/api/2.0/serving-endpoints/{first.endpoint_name}",  # noqa: E731
                                   headers=own.headers).json()["config"]["served_entities"]
        try:
            wait_until(lambda: all(e["state"]["deployment"] == "DEPLOYMENT_READY" for e in served()), timeout=120,
                       interval=0.5, message="both versions to serve again after the restart")
        except AssertionError:
            raise AssertionError(f"not both ready after the restart: {json.dumps(served(), indent=1)}") from None
        with Traffic(own, first.endpoint_name):
            done = _settled(first.endpoint_name)
        assert done["state"] == "PROMOTED" and [d["action"] for d in done["decisions"]] == ["START", "PROMOTE"]
        routes = httpx.get(f"{own.base_url}/api/2.0/serving-endpoints/{first.endpoint_name}", headers=own.headers)
        shares = {r["served_model_name"]: r["traffic_percentage"] for r in routes.json()["config"]["traffic_config"]["routes"]}
        assert shares == {first.served_entity_name: 0, second.served_entity_name: 100}


# -- shadow traffic ------------------------------------------------------------------------

SHADOW_PREFIX = "SHADOW "
ASK = {"input": [{"role": "user", "content": "hello"}]}


def _rows(http: httpx.Client, endpoint: str) -> list[dict]:
    return http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table", params={"max_results": 10000}).json()["rows"]


def _shadow_rows(http: httpx.Client, endpoint: str, count: int, timeout: float = 60) -> list[dict]:
    return wait_until(lambda: len(rows := [r for r in _rows(http, endpoint) if r["shadow_of"]]) >= count and rows,
                      timeout=timeout, interval=0.5, message=f"{count} shadow rows")


def _sse_events(answer: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]


def _waiting_shadow(**overrides) -> Rollout:
    """A shadow rollout that keeps shadowing for the whole test (it cannot gather its evidence)."""
    return Rollout(**{"shadow_percent": 100, "min_requests": 10_000, "max_duration": "10m",
                      "gates": [Gate(metric="error_rate", max=0.5)], **overrides})


def test_shadow_answers_never_reach_the_client_and_each_shadow_trace_points_at_its_live_one(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    # The candidate answers differently and slowly: neither may show in what callers get.
    shadow = agents.deploy(model, "2", environment_vars={"INFO_AGENT_PREFIX": SHADOW_PREFIX, "INFO_AGENT_SLEEP": "2"},
                           rollout=_waiting_shadow())
    assert _traffic(http, endpoint) == {first.served_entity_name: 100, shadow.served_entity_name: 0}
    for _ in range(4):
        started = time.monotonic()
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=ASK)
        assert answer.status_code == 200 and time.monotonic() - started < 1.5  # the shadow's 2 s are not the caller's
        assert answer.json()["output"][0]["content"][0]["text"] == "Echo: hello"
        assert answer.headers["served-model-name"] == first.served_entity_name
    streamed = http.post(f"/serving-endpoints/{endpoint}/invocations", json={**ASK, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    done = [e for e in _sse_events(streamed) if e.get("type") == "response.output_item.done"]
    assert done and done[-1]["custom_outputs"]["entity"] == first.served_entity_name
    assert streamed.headers["served-model-name"] == first.served_entity_name

    shadows = _shadow_rows(http, endpoint, 5)
    live = {r["trace_id"]: r for r in _rows(http, endpoint) if not r["shadow_of"]}
    assert len(shadows) == 5 and len(live) == 5
    for row in shadows:
        assert row["served_entity"] == shadow.served_entity_name and row["status_code"] == 200
        assert row["shadow_of"] in live  # each copy points at the live request it copied
    assert sum(r["stream"] for r in shadows) == 1
    assert all(SHADOW_PREFIX in r["response"] for r in shadows if not r["stream"])
    assert all(r["served_entity"] == first.served_entity_name for r in live.values())
    # The trace says so too, for MLflow's UI and search: metadata agentwharf.shadow_of.
    copied = mlflow.get_trace(shadows[0]["trace_id"])
    assert copied.info.trace_metadata["agentwharf.shadow_of"] == shadows[0]["shadow_of"]
    assert "agentwharf.shadow_of" not in mlflow.get_trace(shadows[0]["shadow_of"]).info.trace_metadata

    # The rollout's view judges the shadow as the candidate, side by side with the live version.
    view = wait_until(lambda: (v := agents.get_rollout(endpoint))["window"]
                      and v["window"]["candidate"]["requests"] >= 5 and v, timeout=30, message="the window's figures")
    assert view["state"] == "RUNNING" and view["shadowing"] and view["traffic_percentage"] == 0
    assert view["window"]["stage"].startswith("shadow") and view["window"]["current"]["requests"] >= 5
    assert view["window"]["candidate"]["p95_latency_ms"] >= 2000 and view["shadow"]["sent"] == 5
    assert view["decisions"][0]["action"] == "START" and "never returned" in view["decisions"][0]["reason"]

    # Promoted by hand: the candidate answers everyone, and nothing is shadowed any more.
    agents.promote_rollout(endpoint)
    assert _traffic(http, endpoint) == {first.served_entity_name: 0, shadow.served_entity_name: 100}
    answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=ASK)
    assert answer.json()["output"][0]["content"][0]["text"].startswith(SHADOW_PREFIX)
    time.sleep(1)
    assert len([r for r in _rows(http, endpoint) if r["shadow_of"]]) == 5
    agents.delete_deployment(model)


def test_a_bad_shadow_is_rolled_back_having_answered_no_user(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    rollout = Rollout(shadow_percent=100, min_requests=20, max_duration="5m",
                      gates=[Gate(scorer="quality", min_pass_rate=0.9, min_samples=10)])
    with Traffic(platform, first.endpoint_name):
        bad = agents.deploy(model, "2", environment_vars={"INFO_AGENT_PREFIX": BAD_PREFIX}, rollout=rollout)
        done = _settled(first.endpoint_name)
    assert done["state"] == "ROLLED_BACK", done["decisions"]
    assert [d["action"] for d in done["decisions"]] == ["START", "ROLLBACK"]
    assert "gate quality min_pass_rate=0.9 failed: pass rate 0.000" in done["decisions"][-1]["reason"]
    assert _traffic(http, first.endpoint_name) == {first.served_entity_name: 100, bad.served_entity_name: 0}
    answered = [r for r in _rows(http, first.endpoint_name) if r["served_entity"] == bad.served_entity_name]
    # Every answer of the bad version was a shadow copy: no user ever got one.
    assert answered and all(r["shadow_of"] for r in answered)
    FIGURES.append(f"rollout: a shadow failing its scorer answered {len(answered)} shadow copies and 0 users before "
                   "its rollback")
    agents.delete_deployment(model)


def test_a_good_shadow_is_promoted_to_its_canary_then_to_all_traffic(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    rollout = Rollout(shadow_percent=100, canary_percent=30, steps=[30], min_requests=15, max_duration="5m",
                      gates=[Gate(scorer="quality", min_pass_rate=0.9, min_samples=10), Gate(metric="error_rate", max=0.05)])
    with Traffic(platform, first.endpoint_name):
        second = agents.deploy(model, "2", rollout=rollout)
        done = _settled(first.endpoint_name)
    assert done["state"] == "PROMOTED", done["decisions"]
    assert [(d["action"], d["percent"]) for d in done["decisions"]] == [("START", 0), ("STEP", 30), ("PROMOTE", 100)]
    assert "held at shadow (100% of requests copied)" in done["decisions"][1]["reason"]
    assert _traffic(http, first.endpoint_name) == {first.served_entity_name: 0, second.served_entity_name: 100}
    agents.delete_deployment(model)


def test_a_shadow_takes_none_of_the_callers_rate_limit_and_never_acts_as_the_user(platform, http, logged):
    from tests.integration.test_governance import _log_relay

    model = f"main.rollout.relay{uuid.uuid4().hex[:6]}"
    for _ in range(2):  # the relay agent asks for an on-behalf-of token
        _log_relay(model, endpoints=[], scopes=["serving.serving-endpoints"])
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    agents.deploy(model, "2", rollout=_waiting_shadow())
    limited = http.put(f"/api/2.0/serving-endpoints/{endpoint}/ai-gateway",
                       json={"rate_limits": [{"calls": 4, "key": "user", "renewal_period": "minute"}]})
    assert limited.status_code == 200, limited.text
    body = {**ASK, "custom_inputs": {"via": "user"}}
    for _ in range(4):  # four calls, four shadow copies: the limit of four still holds them all
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=body)
        assert answer.status_code == 200, answer.text
        assert "error" not in answer.json()["custom_outputs"]  # the live version acts as the caller
    assert http.post(f"/serving-endpoints/{endpoint}/invocations", json=body).status_code == 429
    shadows = _shadow_rows(http, endpoint, 4)
    assert len(shadows) == 4
    for row in shadows:  # the candidate got no on-behalf-of credential
        outputs = json.loads(row["response"])["custom_outputs"]
        assert "No on-behalf-of-user credentials" in outputs["error"]
    agents.delete_deployment(model)


def test_a_slow_shadow_drops_copies_past_its_bound_instead_of_piling_up(platform, http, logged):
    model = _versions(logged, 2)
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    agents.deploy(model, "2", environment_vars={"INFO_AGENT_SLEEP": "8"}, rollout=_waiting_shadow())
    started = time.monotonic()
    for _ in range(30):
        assert http.post(f"/serving-endpoints/{endpoint}/invocations", json=ASK).status_code == 200
    took = time.monotonic() - started
    shadow = agents.get_rollout(endpoint)["shadow"]
    # At most 16 copies in flight (AGENTWHARF_SHADOW_MAX_IN_FLIGHT); the rest were dropped, counted.
    assert shadow["in_flight"] <= 16 and shadow["dropped"] >= 30 - 16 - int(took / 8) * 16, (shadow, took)
    assert shadow["dropped"] > 0
    assert took < 8 * 2  # callers never waited for the slow shadow
    settled = wait_until(lambda: (s := agents.get_rollout(endpoint)["shadow"])["in_flight"] == 0 and s, timeout=60,
                         message="the shadow copies to finish")
    assert settled["sent"] + settled["dropped"] == 30 and len(_shadow_rows(http, endpoint, settled["sent"])) == settled["sent"]
    agents.delete_deployment(model)


def test_a_shadow_resumes_after_a_restart_of_the_platform(tmp_path):
    """The gateway's shadow targets come back from the stored rollout, not from memory."""
    with own_platform_with_info_agent(tmp_path / "home", "/tests/shadow-restart",
                                      {"AGENTWHARF_ROLLOUT_INTERVAL_SECONDS": "0.5"}) as (own, uri):
        model = "main.rollout.shadowrestart"
        for _ in range(2):
            mlflow.register_model(uri, model)
        first = agents.deploy(model, "1")
        agents.deploy(model, "2", environment_vars={"INFO_AGENT_PREFIX": SHADOW_PREFIX}, rollout=_waiting_shadow())
        own.stop()
        own.start()
        with httpx.Client(base_url=own.base_url, headers=own.headers, timeout=60) as http:
            # Requests keep coming: the first ones may arrive before the controller's first tick.
            def shadowed():
                answer = http.post(f"/serving-endpoints/{first.endpoint_name}/invocations", json=ASK)
                assert answer.json()["output"][0]["content"][0]["text"] == "Echo: hello"
                return [r for r in _rows(http, first.endpoint_name) if r["shadow_of"]]

            rows = wait_until(shadowed, timeout=60, interval=0.5, message="a shadow copy after the restart")
        assert SHADOW_PREFIX in rows[0]["response"]
        assert agents.get_rollout(first.endpoint_name)["shadowing"] is True
