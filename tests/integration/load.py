"""Load under faults: requests from several threads, a ledger of what the platform acknowledged,
and a check against the database that every acknowledged request was stored exactly once.

Every request carries a unique client request id (``x-request-id``), which the platform keeps
in the inference row (``client_request_id``) and in MLflow's ``trace_info.client_request_id``.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import mlflow
import sqlalchemy as sa

from agentwharf.settings import sqlalchemy_url

from tests.integration.platform_process import PlatformProcess, auth_headers, wait_until

AGENTS = Path(__file__).parent / "agents"
BODY = {"input": [{"role": "user", "content": "x"}]}
#: How long a load thread waits after an answer that says to retry later (503 + Retry-After).
RETRY_PAUSE_SECONDS = 0.25
#: Figures of every fault scenario of the session, printed in pytest's summary (conftest).
FIGURES: list[str] = []


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for child in children.get(current, []):
            found.append(child)
            todo.append(child)
    return found


def child_pid(platform: PlatformProcess, marker: bytes) -> int | None:
    """The pid of the platform's live descendant whose command line contains ``marker``."""
    for pid in descendants(platform.process.pid):
        try:
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def writer_pid(platform: PlatformProcess) -> int | None:
    return child_pid(platform, b"agentwharf.tracing.writer")


def deploy_info(base_url: str, model: str, environment_vars: dict | None = None, scale_to_zero: bool = False) -> str:
    """Log the info test agent to the platform at ``base_url``, register and deploy it."""
    mlflow.set_tracking_uri(base_url)
    mlflow.set_experiment("/tests/durability")  # not the session platform's active experiment
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="agent", python_model=str(AGENTS / "info_agent.py"), pip_requirements=["mlflow"]).model_uri
    mlflow.register_model(uri, model)
    body = {"model_name": model, "model_version": "1", "environment_vars": environment_vars or {}, "scale_to_zero": scale_to_zero}
    answer = httpx.post(f"{base_url}/api/2.0/agents/deployments:deploy", json=body, timeout=60, headers=auth_headers())
    endpoint = answer.json()["deployed_chain"]["endpoint_name"]
    wait_until(lambda: httpx.get(f"{base_url}/api/2.0/serving-endpoints/{endpoint}", headers=auth_headers()).json()["state"]["ready"] == "READY",
               timeout=120, message="the deployment")
    return endpoint


def stored(platform: PlatformProcess, client_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """How many inference rows and how many MLflow traces each client request id has, read
    from the platform's database (SQLite or PostgreSQL) directly."""
    if not client_ids:
        return {}, {}
    url = sqlalchemy_url(platform.database_url)
    engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    ids = sa.bindparam("ids", expanding=True)
    try:
        with engine.connect() as db:
            rows = dict(db.execute(sa.text("SELECT client_request_id, COUNT(*) FROM aw_inference_log "
                                           "WHERE client_request_id IN :ids GROUP BY client_request_id").bindparams(ids),
                                   {"ids": client_ids}).all())
            traces = dict(db.execute(sa.text("SELECT client_request_id, COUNT(*) FROM trace_info "
                                             "WHERE client_request_id IN :ids GROUP BY client_request_id").bindparams(ids),
                                     {"ids": client_ids}).all())
    finally:
        engine.dispose()
    return rows, traces


@dataclass
class Ledger:
    """What was sent and what came back, across threads."""

    name: str
    sent: int = 0
    acknowledged: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    #: (status, content type, start of the body) of every error answer that was not JSON.
    not_json: list[tuple[int, str, str]] = field(default_factory=list)
    lost_connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, client: httpx.Client, path: str, body: dict | None = None, stream: bool = False,
             client_id: str | None = None, **kwargs) -> httpx.Response | None:
        client_id = client_id or f"{self.name}-{uuid.uuid4().hex[:16]}"
        payload = {**(body or BODY), **({"stream": True} if stream else {})}
        with self.lock:
            self.sent += 1
        try:
            answer = client.post(path, json=payload, headers={"x-request-id": client_id}, **kwargs)
        except httpx.HTTPError:
            with self.lock:
                self.lost_connections += 1
            return None
        self.note(answer, client_id, stream)
        return answer

    def note(self, answer: httpx.Response, client_id: str, stream: bool = False) -> None:
        done = answer.status_code == 200 and (not stream or answer.text.endswith("data: [DONE]\n\n"))
        with self.lock:
            self.statuses[answer.status_code] += 1
            if done:
                self.acknowledged.append(client_id)
            if answer.status_code >= 400 and not answer.headers.get("content-type", "").startswith("application/json"):
                self.not_json.append((answer.status_code, answer.headers.get("content-type", ""), answer.text[:200]))

    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)

    def verify(self, platform: PlatformProcess, timeout: float = 120.0) -> None:
        """Every acknowledged request stored exactly once (row and trace), no error that was
        not JSON; the figures go to the session summary. A client id sent N times and
        acknowledged N times must have N rows and N traces."""
        expected = Counter(self.acknowledged)

        def all_stored():
            # Every count reached, not only every id seen: the writer may store one id's
            # requests in different batches (three requests with one id, say).
            rows, traces = stored(platform, list(expected))
            reached = all(rows.get(key, 0) >= count and traces.get(key, 0) >= count for key, count in expected.items())
            return (rows, traces) if reached else None

        rows, traces = wait_until(all_stored, timeout=timeout, interval=0.5, message=f"{self.name}: every acknowledged request stored")
        FIGURES.append(f"{self.name}: sent {self.sent}, acknowledged {sum(expected.values())}, stored {sum(rows.values())} rows / "
                       f"{sum(traces.values())} traces, 5xx {self.server_errors()} (non-JSON errors {len(self.not_json)}), "
                       f"statuses {dict(sorted(self.statuses.items()))}, connections lost {self.lost_connections}")
        assert rows == traces == dict(expected), "a request stored more or fewer times than it was acknowledged"
        assert self.not_json == []


class Load:
    """Threads sending requests to ``path`` until stopped; every fourth thread streams."""

    def __init__(self, platform: PlatformProcess, path: str, ledger: Ledger, threads: int = 6, timeout: float = 15.0):
        self.platform, self.path, self.ledger = platform, path, ledger
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i, timeout), name=f"load-{ledger.name}-{i}") for i in range(threads)]

    def _run(self, index: int, timeout: float) -> None:
        with httpx.Client(base_url=self.platform.base_url, timeout=timeout, headers=self.platform.headers) as client:
            while not self.stop_event.is_set():
                answer = self.ledger.send(client, self.path, stream=index % 4 == 0)
                if answer is not None and "retry-after" in answer.headers:
                    # As a client should, wait before retrying (shorter than Retry-After asks, so
                    # the load resumes soon): retrying at once, six threads answered 503 in a
                    # tight loop take the CPU a replacement worker needs to start (it took 5x longer).
                    self.stop_event.wait(RETRY_PAUSE_SECONDS)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def wait_for(self, acknowledged: int, timeout: float = 120.0) -> None:
        wait_until(lambda: len(self.ledger.acknowledged) >= acknowledged, timeout=timeout, message=f"{acknowledged} answers")

    def __exit__(self, *_exc) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()
