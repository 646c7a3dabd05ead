"""Shadow rollouts on a real platform: the candidate gets a copy of live requests, its answers
are recorded and judged but never returned, and it earns its traffic (or is rolled back) from
them. Helpers and traffic as in ``test_rollouts``."""

from __future__ import annotations

import json
import time
import uuid

import mlflow

from agentwharf import agents
from agentwharf.agents import Gate, Rollout
from tests.integration.load import FIGURES
from tests.integration.platform_process import wait_until
from tests.integration.rollouts_support import (ASK, BAD_PREFIX, SHADOW_PREFIX, Traffic, decided, inference_rows,
                                                shadow_rows, sse_json_events, traffic_shares, versions,
                                                waiting_shadow)


def test_shadow_answers_never_reach_the_client_and_each_shadow_trace_points_at_its_live_one(platform, http, logged):
    model = versions(logged, 2)
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    # The candidate answers differently and slowly: neither may show in what callers get.
    shadow = agents.deploy(model, "2", environment_vars={"INFO_AGENT_PREFIX": SHADOW_PREFIX, "INFO_AGENT_SLEEP": "2"},
                           rollout=waiting_shadow())
    assert traffic_shares(http, endpoint) == {first.served_entity_name: 100, shadow.served_entity_name: 0}
    for _ in range(4):
        started = time.monotonic()
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=ASK)
        assert answer.status_code == 200 and time.monotonic() - started < 1.5  # the shadow's 2 s are not the caller's
        assert answer.json()["output"][0]["content"][0]["text"] == "Echo: hello"
        assert answer.headers["served-model-name"] == first.served_entity_name
    streamed = http.post(f"/serving-endpoints/{endpoint}/invocations", json={**ASK, "stream": True})
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    done = [e for e in sse_json_events(streamed) if e.get("type") == "response.output_item.done"]
    assert done and done[-1]["custom_outputs"]["entity"] == first.served_entity_name
    assert streamed.headers["served-model-name"] == first.served_entity_name

    shadows = shadow_rows(http, endpoint, 5)
    live = {r["trace_id"]: r for r in inference_rows(http, endpoint) if not r["shadow_of"]}
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
    assert traffic_shares(http, endpoint) == {first.served_entity_name: 0, shadow.served_entity_name: 100}
    answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=ASK)
    assert answer.json()["output"][0]["content"][0]["text"].startswith(SHADOW_PREFIX)
    time.sleep(1)
    assert len([r for r in inference_rows(http, endpoint) if r["shadow_of"]]) == 5
    agents.delete_deployment(model)


def test_a_bad_shadow_is_rolled_back_having_answered_no_user(platform, http, logged):
    model = versions(logged, 2)
    first = agents.deploy(model, "1")
    rollout = Rollout(shadow_percent=100, min_requests=20, max_duration="5m",
                      gates=[Gate(scorer="quality", min_pass_rate=0.9, min_samples=10)])
    with Traffic(platform, first.endpoint_name):
        bad = agents.deploy(model, "2", environment_vars={"INFO_AGENT_PREFIX": BAD_PREFIX}, rollout=rollout)
        done = decided(first.endpoint_name)
    assert done["state"] == "ROLLED_BACK", done["decisions"]
    assert [d["action"] for d in done["decisions"]] == ["START", "ROLLBACK"]
    assert "gate quality min_pass_rate=0.9 failed: pass rate 0.000" in done["decisions"][-1]["reason"]
    assert traffic_shares(http, first.endpoint_name) == {first.served_entity_name: 100, bad.served_entity_name: 0}
    answered = [r for r in inference_rows(http, first.endpoint_name) if r["served_entity"] == bad.served_entity_name]
    # Every answer of the bad version was a shadow copy: no user ever got one.
    assert answered and all(r["shadow_of"] for r in answered)
    FIGURES.append(f"rollout: a shadow failing its scorer answered {len(answered)} shadow copies and 0 users before "
                   "its rollback")
    agents.delete_deployment(model)


def test_a_good_shadow_is_promoted_to_its_canary_then_to_all_traffic(platform, http, logged):
    model = versions(logged, 2)
    first = agents.deploy(model, "1")
    rollout = Rollout(shadow_percent=100, canary_percent=30, steps=[30], min_requests=15, max_duration="5m",
                      gates=[Gate(scorer="quality", min_pass_rate=0.9, min_samples=10), Gate(metric="error_rate", max=0.05)])
    with Traffic(platform, first.endpoint_name):
        second = agents.deploy(model, "2", rollout=rollout)
        done = decided(first.endpoint_name)
    assert done["state"] == "PROMOTED", done["decisions"]
    assert [(d["action"], d["percent"]) for d in done["decisions"]] == [("START", 0), ("STEP", 30), ("PROMOTE", 100)]
    assert "held at shadow (100% of requests copied)" in done["decisions"][1]["reason"]
    assert traffic_shares(http, first.endpoint_name) == {first.served_entity_name: 0, second.served_entity_name: 100}
    agents.delete_deployment(model)


def test_a_shadow_takes_none_of_the_callers_rate_limit_and_never_acts_as_the_user(platform, http, logged):
    from tests.integration.test_governance import _log_relay

    model = f"main.rollout.relay{uuid.uuid4().hex[:6]}"
    for _ in range(2):  # the relay agent asks for an on-behalf-of token
        _log_relay(model, endpoints=[], scopes=["serving.serving-endpoints"])
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    agents.deploy(model, "2", rollout=waiting_shadow())
    limited = http.put(f"/api/2.0/serving-endpoints/{endpoint}/ai-gateway",
                       json={"rate_limits": [{"calls": 4, "key": "user", "renewal_period": "minute"}]})
    assert limited.status_code == 200, limited.text
    body = {**ASK, "custom_inputs": {"via": "user"}}
    for _ in range(4):  # four calls, four shadow copies: the limit of four still holds them all
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json=body)
        assert answer.status_code == 200, answer.text
        assert "error" not in answer.json()["custom_outputs"]  # the live version acts as the caller
    assert http.post(f"/serving-endpoints/{endpoint}/invocations", json=body).status_code == 429
    shadows = shadow_rows(http, endpoint, 4)
    assert len(shadows) == 4
    for row in shadows:  # the candidate got no on-behalf-of credential
        outputs = json.loads(row["response"])["custom_outputs"]
        assert "No on-behalf-of-user credentials" in outputs["error"]
    agents.delete_deployment(model)


def test_a_slow_shadow_drops_copies_past_its_bound_instead_of_piling_up(platform, http, logged):
    model = versions(logged, 2)
    first = agents.deploy(model, "1")
    endpoint = first.endpoint_name
    agents.deploy(model, "2", environment_vars={"INFO_AGENT_SLEEP": "8"}, rollout=waiting_shadow())
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
    assert settled["sent"] + settled["dropped"] == 30 and len(shadow_rows(http, endpoint, settled["sent"])) == settled["sent"]
    agents.delete_deployment(model)
