"""What the rollout tests share (``test_rollouts``, ``test_rollout_shadows``,
``test_rollout_restarts``): steady traffic with its ``quality`` scorer, and readings of an
endpoint's routes, inference rows and rollout."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import mlflow
from mlflow.entities import AssessmentSource

from agentwharf import agents
from agentwharf.agents import Gate, Rollout
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
        self.threads = [threading.Thread(target=self._send, name=f"traffic-{endpoint}", daemon=True),
                        threading.Thread(target=self._score, name=f"quality-scorer-{endpoint}", daemon=True)]

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


def versions(logged: dict[str, str], count: int) -> str:
    model = f"main.rollout.m{uuid.uuid4().hex[:6]}"
    for _ in range(count):
        mlflow.register_model(logged["info"], model)
    return model


def answered_by(http: httpx.Client, endpoint: str) -> dict[str, int]:
    rows = http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table", params={"max_results": 10000}).json()["rows"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["served_entity"]] = counts.get(row["served_entity"], 0) + 1
    return counts


def traffic_shares(http: httpx.Client, endpoint: str) -> dict[str, int]:
    routes = http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["config"]["traffic_config"]["routes"]
    return {r["served_model_name"]: r["traffic_percentage"] for r in routes}


def decided(endpoint: str, timeout: float = 150):
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
        threading.Thread(target=self.server.serve_forever, name="rollout-webhook", daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


# -- shadow traffic ------------------------------------------------------------------------

SHADOW_PREFIX = "SHADOW "
ASK = {"input": [{"role": "user", "content": "hello"}]}


def inference_rows(http: httpx.Client, endpoint: str) -> list[dict]:
    return http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table", params={"max_results": 10000}).json()["rows"]


def shadow_rows(http: httpx.Client, endpoint: str, count: int, timeout: float = 60) -> list[dict]:
    return wait_until(lambda: len(rows := [r for r in inference_rows(http, endpoint) if r["shadow_of"]]) >= count and rows,
                      timeout=timeout, interval=0.5, message=f"{count} shadow rows")


def sse_json_events(answer: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in answer.text.splitlines() if line.startswith("data: {")]


def waiting_shadow(**overrides) -> Rollout:
    """A shadow rollout that keeps shadowing for the whole test (it cannot gather its evidence)."""
    return Rollout(**{"shadow_percent": 100, "min_requests": 10_000, "max_duration": "10m",
                      "gates": [Gate(metric="error_rate", max=0.5)], **overrides})
