"""Rollouts across a restart of the platform: their state is in the database, so a rollout
carries on and decides, and a shadow's targets come back, after ``agentwharf up`` again."""

from __future__ import annotations

import json

import httpx
import mlflow
import pytest

from agentwharf import agents
from agentwharf.agents import Gate, Rollout
from tests.integration.conftest import own_platform_with_info_agent
from tests.integration.platform_process import wait_until
from tests.integration.rollouts_support import (ASK, SHADOW_PREFIX, Traffic, decided, inference_rows,
                                                waiting_shadow)


@pytest.fixture(scope="module")
def restartable(tmp_path_factory):
    """A platform of this module's own (the session's is never restarted), shared by its tests:
    each deploys a model of its own, restarts the platform and deletes what it deployed, so
    the next restart restores only its own. Starting a fresh platform per test cost as much
    as the restart itself. No warm spares (AGENTWHARF_WORKER_SPARES=0): each version is
    deployed as soon as the one before answers, sooner than a spare is ready, and the restart
    starts them all at once, so a spare is never taken here and only takes CPU from the
    worker starts the tests wait for."""
    env = {"AGENTWHARF_ROLLOUT_INTERVAL_SECONDS": "0.5", "AGENTWHARF_WORKER_SPARES": "0"}
    with own_platform_with_info_agent(tmp_path_factory.mktemp("rollout-restarts") / "home", "/tests/rollout-restarts",
                                      env) as started:
        yield started


def _roll_out_then_restart(restartable, model: str, **candidate):
    """Two versions of the info agent registered as ``model``: 1 deployed, 2 deployed with
    ``candidate`` (its rollout among them); then the platform stopped and started again."""
    own, uri = restartable
    for _ in range(2):
        mlflow.register_model(uri, model)
    first = agents.deploy(model, "1")
    second = agents.deploy(model, "2", **candidate)
    own.stop()
    own.start()
    return first, second


def test_a_rollout_survives_a_restart_of_the_platform(restartable):
    """State is in the database: after a restart the rollout carries on and decides."""
    own, _ = restartable
    model = "main.rollout.restart"
    rollout = Rollout(canary_percent=50, min_requests=10, max_duration="10m",
                      gates=[Gate(metric="error_rate", max=0.1)])
    first, second = _roll_out_then_restart(restartable, model, rollout=rollout)
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
        done = decided(first.endpoint_name)
    assert done["state"] == "PROMOTED" and [d["action"] for d in done["decisions"]] == ["START", "PROMOTE"]
    routes = httpx.get(f"{own.base_url}/api/2.0/serving-endpoints/{first.endpoint_name}", headers=own.headers)
    shares = {r["served_model_name"]: r["traffic_percentage"] for r in routes.json()["config"]["traffic_config"]["routes"]}
    assert shares == {first.served_entity_name: 0, second.served_entity_name: 100}
    agents.delete_deployment(model)


def test_a_shadow_resumes_after_a_restart_of_the_platform(restartable):
    """The gateway's shadow targets come back from the stored rollout, not from memory."""
    own, _ = restartable
    model = "main.rollout.shadowrestart"
    first, _ = _roll_out_then_restart(restartable, model, environment_vars={"INFO_AGENT_PREFIX": SHADOW_PREFIX},
                                      rollout=waiting_shadow())
    with httpx.Client(base_url=own.base_url, headers=own.headers, timeout=60) as http:
        # Requests keep coming: the first ones may arrive before the controller's first tick.
        def shadowed():
            answer = http.post(f"/serving-endpoints/{first.endpoint_name}/invocations", json=ASK)
            assert answer.json()["output"][0]["content"][0]["text"] == "Echo: hello"
            return [r for r in inference_rows(http, first.endpoint_name) if r["shadow_of"]]

        rows = wait_until(shadowed, timeout=60, interval=0.5, message="a shadow copy after the restart")
    assert SHADOW_PREFIX in rows[0]["response"]
    assert agents.get_rollout(first.endpoint_name)["shadowing"] is True
    agents.delete_deployment(model)
