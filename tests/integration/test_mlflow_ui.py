"""The endpoint's traces in MLflow's own UI, served at the platform's base URL, in a real
browser (Debian's Chromium driven by Playwright)."""

from __future__ import annotations

import shutil
import uuid

import mlflow
from playwright.sync_api import sync_playwright

from agentwharf import agents

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium tries to reach Google's hosts and this machine's closed network
# refuses it many times over.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_served_requests_show_in_mlflows_trace_ui(platform, http, logged, tmp_path):
    model = "main.tests.ui"
    mlflow.register_model(logged["info"], model)
    deployment = agents.deploy(model, "1")
    marker = f"ui-{uuid.uuid4().hex[:8]}"
    answer = http.post(f"/serving-endpoints/{deployment.endpoint_name}/invocations",
                       json={"input": [{"role": "user", "content": marker}]})
    assert answer.status_code == 200
    experiment = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}").json()["experiment_id"]

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            # Without a token a browser gets the sign-in page (status 401), which keeps the
            # token in a same-site cookie and reloads into MLflow's UI.
            first = page.goto(f"{platform.base_url}/#/experiments/{experiment}/traces")
            assert first.status == 401
            page.fill("#token", platform.token)
            page.click("button[type=submit]")
            page.wait_for_load_state()
            # The trace list shows the request's input; the writer stores it within seconds,
            # so reload until it appears.
            for _ in range(20):
                if page.get_by_text(marker).count():
                    break
                page.wait_for_timeout(1000)
                page.reload()
            row = page.get_by_text(marker).first
            row.wait_for(timeout=10_000)
            # MLflow's UI greets a new browser with a feature tour popover over the list.
            got_it = page.get_by_role("button", name="Got it")
            if got_it.count():
                got_it.first.click()
            row.click(timeout=10_000)
            # The trace view shows the request's root span and the agent's own span under it.
            page.get_by_text(f"/serving-endpoints/{deployment.endpoint_name}/invocations").first.wait_for(timeout=15_000)
            assert page.get_by_text("predict", exact=True).count() >= 1
        except Exception:
            page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
            raise
        finally:
            browser.close()
    agents.delete_deployment(model)
