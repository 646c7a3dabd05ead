"""The serving console's rollout panel in a real browser (Debian's Chromium driven by
Playwright) against a real platform: a canary rollout with its gates and decisions, what a
viewer sees of it, a forged cross-site abort refused, and a manager aborting it from the page."""

from __future__ import annotations

import httpx
import mlflow
from playwright.sync_api import expect

from agentwharf import agents
from agentwharf.agents import Gate, Rollout
from tests.integration.platform_process import wait_until
from tests.integration.test_web import _accessible, _sign_in, browser  # noqa: F401 - browser is a fixture

MODEL = "main.web.rollout"


def _viewer(http: httpx.Client, endpoint: str) -> str:
    """A user with CAN_VIEW on ``endpoint`` and a token of their own."""
    assert http.post("/api/2.0/preview/scim/v2/Users", json={"userName": "rollout-viewer"}).status_code == 200
    token = http.post("/api/2.0/token-management/on-behalf-of/tokens",
                      json={"application_id": "rollout-viewer"}).json()["token_value"]
    acl = {"access_control_list": [{"user_name": "rollout-viewer", "permission_level": "CAN_VIEW"}]}
    assert http.patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}", json=acl).status_code == 200
    return token


def test_the_console_shows_a_rollouts_gates_and_decisions_and_a_manager_aborts_it(platform, browser, http, logged):  # noqa: F811
    for _ in range(2):
        mlflow.register_model(logged["info"], MODEL)
    first = agents.deploy(MODEL, "1", env_manager="local")
    endpoint = first.endpoint_name
    # Never enough evidence to decide by itself: it stays RUNNING until someone ends it.
    second = agents.deploy(MODEL, "2", env_manager="local", rollout=Rollout(
        canary_percent=20, min_requests=10_000, max_duration="1h",
        gates=[Gate(metric="error_rate", max=0.5), Gate(metric="p95_latency_ms", max_ratio=3.0)]))
    def ask():
        assert http.post(f"/serving-endpoints/{endpoint}/invocations",
                         json={"input": [{"role": "user", "content": "hello"}]}).status_code == 200

    for _ in range(12):
        ask()
    wait_until(lambda: (w := agents.get_rollout(endpoint)["window"]) and w["candidate"]["requests"] + w["current"]["requests"] >= 12,
               timeout=30, message="the controller to judge the window")
    # A 20% split sends none of 12 requests to the candidate about 7% of the time; the error-rate
    # figure below needs at least one of its answers.
    wait_until(lambda: agents.get_rollout(endpoint)["window"]["candidate"]["requests"] >= 1 or ask(),
               timeout=30, message="the candidate to answer a request")

    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    _sign_in(page, platform.base_url, platform.token, f"/serving/endpoints/{endpoint}")
    expect(page.locator("#rollout-state")).to_have_text("running")
    expect(page.locator("#rollout-candidate")).to_have_text(second.served_entity_name)
    expect(page.locator("#rollout-candidate-share")).to_have_text("20%")
    expect(page.locator("#rollout-current")).to_have_text(first.served_entity_name)
    expect(page.locator("#rollout-current-share")).to_have_text("80%")
    expect(page.locator("#rollout-step")).to_have_text("1 of 2 (20% → 50% → 100%)")
    error_rate = page.locator("#rollout-gates tr[data-gate='error_rate']")
    expect(error_rate.locator("td").nth(0)).to_have_text("0")  # the candidate answered every request
    expect(error_rate.locator("td").nth(2)).to_have_text("≤ 0.5")
    expect(error_rate.locator("td").nth(3)).to_contain_text("more samples")
    latency = page.locator("#rollout-gates tr[data-gate='p95_latency_ms']")
    expect(latency.locator("td").nth(1)).to_contain_text(" ms")
    expect(latency.locator("td").nth(2)).to_have_text("≤ 3 × current")
    start = page.locator("#rollout-decisions tbody tr")
    expect(start).to_have_count(1)
    expect(start.first).to_contain_text("START at 20%")
    expect(start.first).to_contain_text(f"beside {first.served_entity_name}")
    _accessible(page, "20-endpoint-rollout-running")

    # A viewer sees the rollout, and no button to end it.
    viewer = browser.new_page(viewport={"width": 1300, "height": 900})
    _sign_in(viewer, platform.base_url, _viewer(http, endpoint), f"/serving/endpoints/{endpoint}")
    expect(viewer.locator("#rollout-state")).to_have_text("running")
    expect(viewer.get_by_role("button", name="Abort")).to_have_count(0)
    expect(viewer.get_by_role("button", name="Promote")).to_have_count(0)
    viewer.close()

    # Another site cannot end it with the manager's cookie.
    forged = httpx.post(f"{platform.base_url}/serving/endpoints/{endpoint}/rollout/abort",
                        headers={"Cookie": f"agentwharf_token={platform.token}", "Origin": "http://evil.example"})
    assert forged.status_code == 403 and agents.get_rollout(endpoint)["state"] == "RUNNING"

    page.get_by_role("button", name="Abort").click()
    expect(page.get_by_role("status")).to_contain_text("Rollout aborted")
    expect(page.locator("#rollout-state")).to_have_text("aborted")
    expect(page.locator("#rollout-candidate-share")).to_have_text("0%")
    expect(page.locator("#rollout-current-share")).to_have_text("100%")
    expect(page.locator("#rollout-decisions tbody tr").first).to_contain_text("ROLLBACK at 0%")
    expect(page.locator("#rollout-decisions tbody tr").first).to_contain_text("aborted by admin")
    expect(page.get_by_role("button", name="Abort")).to_have_count(0)
    rows = page.locator("tr[data-entity]")
    expect(rows.filter(has_text=first.served_entity_name).locator("td").nth(1)).to_have_text("100%")
    _accessible(page, "21-endpoint-rollout-aborted")
    page.close()

    done = agents.get_rollout(endpoint)
    assert done["state"] == "ABORTED" and done["decisions"][-1]["reason"] == "aborted by admin"
    routes = http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["config"]["traffic_config"]["routes"]
    assert {r["served_model_name"]: r["traffic_percentage"] for r in routes} == {
        first.served_entity_name: 100, second.served_entity_name: 0}
    agents.delete_deployment(MODEL)
