"""Nothing lost: kill -9 of the whole platform under load, and back-pressure when the writer
cannot keep up."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import uuid
from pathlib import Path

import httpx
import mlflow

from tests.integration.platform_process import PlatformProcess, auth_headers, wait_until

AGENTS = Path(__file__).parent / "agents"


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


def deploy_info(base_url: str, model: str) -> str:
    mlflow.set_tracking_uri(base_url)
    mlflow.set_experiment("/tests/durability")  # not the session platform's active experiment
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="agent", python_model=str(AGENTS / "info_agent.py"), pip_requirements=["mlflow"]).model_uri
    mlflow.register_model(uri, model)
    answer = httpx.post(f"{base_url}/api/2.0/agents/deployments:deploy", json={"model_name": model, "model_version": "1"}, timeout=60, headers=auth_headers())
    endpoint = answer.json()["deployed_chain"]["endpoint_name"]
    wait_until(lambda: httpx.get(f"{base_url}/api/2.0/serving-endpoints/{endpoint}", headers=auth_headers()).json()["state"]["ready"] == "READY",
               timeout=120, message="the deployment")
    return endpoint


def writer_pid(platform: PlatformProcess) -> int:
    for pid in descendants(platform.process.pid):
        try:
            if b"agentwharf.tracing.writer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    raise AssertionError("no writer process found")


def stored(home: Path, request_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """How many inference rows and how many MLflow traces each request id has."""
    with sqlite3.connect(home / "agentwharf.db") as db:
        rows = dict(db.execute(
            f"SELECT request_id, COUNT(*) FROM aw_inference_log WHERE request_id IN ({','.join('?' * len(request_ids))}) GROUP BY request_id",
            request_ids).fetchall())
        traces = dict(db.execute(
            f"SELECT client_request_id, COUNT(*) FROM trace_info WHERE client_request_id IN ({','.join('?' * len(request_ids))}) GROUP BY client_request_id",
            request_ids).fetchall())
    return rows, traces


def test_kill_9_under_load_loses_no_acknowledged_request(tmp_path):
    platform = PlatformProcess(tmp_path / "home").start()
    os.environ.update(platform.client_env())
    try:
        endpoint = deploy_info(platform.base_url, "main.durable.info")
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def load(worker: int) -> None:
            with httpx.Client(base_url=platform.base_url, timeout=10, headers=platform.headers) as client:
                while not stop.is_set():
                    request_id = f"kill9-{worker}-{uuid.uuid4().hex[:12]}"
                    body = {"input": [{"role": "user", "content": "x"}], **({"stream": True} if worker == 0 else {})}
                    try:
                        answer = client.post(f"/serving-endpoints/{endpoint}/invocations", json=body, headers={"x-request-id": request_id})
                    except httpx.HTTPError:
                        return  # the platform is gone
                    if answer.status_code == 200 and (worker != 0 or answer.text.endswith("data: [DONE]\n\n")):
                        with lock:
                            acknowledged.append(request_id)

        threads = [threading.Thread(target=load, args=(i,), name=f"kill9-load-{i}") for i in range(6)]
        for thread in threads:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 300, timeout=120, message="load to build up")
        # The whole platform at once: the platform process, its MLflow server, writer, workers.
        victims = [platform.process.pid, *descendants(platform.process.pid)]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stop.set()
        for thread in threads:
            thread.join()
        platform.process.wait()
        assert len(acknowledged) >= 300

        platform.start()
        ids = list(acknowledged)

        def all_stored():
            rows, traces = stored(platform.home, ids)
            return (rows, traces) if len(rows) == len(ids) and len(traces) == len(ids) else None

        rows, traces = wait_until(all_stored, timeout=120, interval=0.5, message="every acknowledged request to be stored")
        assert set(rows.values()) == {1} and set(traces.values()) == {1}  # exactly once each
    finally:
        platform.stop()


def test_a_full_spool_refuses_work_with_503_and_loses_nothing(tmp_path):
    # ~12 request records fit; the writer is frozen so nothing drains.
    platform = PlatformProcess(tmp_path / "home", env={"AGENTWHARF_SPOOL_MAX_PENDING_BYTES": "20000"}).start()
    os.environ.update(platform.client_env())
    try:
        endpoint = deploy_info(platform.base_url, "main.pressure.info")
        writer = writer_pid(platform)
        os.kill(writer, signal.SIGSTOP)
        answered, refused = [], []
        with httpx.Client(base_url=platform.base_url, timeout=10, headers=platform.headers) as client:
            for _ in range(60):
                request_id = uuid.uuid4().hex
                answer = client.post(f"/serving-endpoints/{endpoint}/invocations", headers={"x-request-id": request_id},
                                     json={"input": [{"role": "user", "content": "x"}]})
                if answer.status_code == 200:
                    answered.append(request_id)
                else:
                    assert answer.status_code == 503
                    assert answer.headers["retry-after"] == "1"
                    assert answer.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
                    assert "spool" in answer.json()["message"]
                    refused.append(request_id)
            metrics = client.get("/metrics").text
        assert answered and refused, (len(answered), len(refused))
        assert f"agentwharf_spool_rejected_total {len(refused)}" in metrics

        os.kill(writer, signal.SIGCONT)
        wait_until(lambda: stored(platform.home, answered)[0].keys() == set(answered), timeout=60, message="the backlog to drain")
        assert stored(platform.home, refused) == ({}, {})  # refused before any work: nothing to record
        after = httpx.post(f"{platform.base_url}/serving-endpoints/{endpoint}/invocations", json={"input": [{"role": "user", "content": "x"}]}, headers=auth_headers())
        wait_until(lambda: httpx.post(f"{platform.base_url}/serving-endpoints/{endpoint}/invocations", headers=auth_headers(),
                                      json={"input": [{"role": "user", "content": "x"}]}).status_code == 200,
                   timeout=30, message="serving to resume")
        assert after.status_code in (200, 503)
    finally:
        platform.stop()
