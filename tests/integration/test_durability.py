"""Nothing lost: kill -9 of the whole platform under load, and back-pressure when the writer
cannot keep up."""

from __future__ import annotations

import os
import signal
import threading
import uuid

import httpx

from tests.integration.load import deploy_info, descendants, stored, writer_pid
from tests.integration.platform_process import PlatformProcess, auth_headers, wait_until

#: These platforms serve one version, deployed once (and restored once): a warm spare
#: (AGENTWHARF_WORKER_SPARES) would never be taken, only take CPU from the load.
NO_SPARES = {"AGENTWHARF_WORKER_SPARES": "0"}


def test_kill_9_under_load_loses_no_acknowledged_request(tmp_path):
    kill_9_under_load_loses_nothing(PlatformProcess(tmp_path / "home", env=NO_SPARES))


def kill_9_under_load_loses_nothing(platform: PlatformProcess) -> None:
    """kill -9 of the whole platform under load, then ``up`` again: every acknowledged request
    is stored exactly once (whatever database ``platform`` is configured with)."""
    platform.start()
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
            rows, traces = stored(platform, ids)
            return (rows, traces) if len(rows) == len(ids) and len(traces) == len(ids) else None

        rows, traces = wait_until(all_stored, timeout=120, interval=0.5, message="every acknowledged request to be stored")
        assert set(rows.values()) == {1} and set(traces.values()) == {1}  # exactly once each
    finally:
        platform.stop()


def test_a_full_spool_refuses_work_with_503_and_loses_nothing(tmp_path):
    # ~12 request records fit; the writer is frozen so nothing drains.
    platform = PlatformProcess(tmp_path / "home", env={"AGENTWHARF_SPOOL_MAX_PENDING_BYTES": "20000", **NO_SPARES}).start()
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
        wait_until(lambda: stored(platform, answered)[0].keys() == set(answered), timeout=60, message="the backlog to drain")
        assert stored(platform, refused) == ({}, {})  # refused before any work: nothing to record
        after = httpx.post(f"{platform.base_url}/serving-endpoints/{endpoint}/invocations", json={"input": [{"role": "user", "content": "x"}]}, headers=auth_headers())
        wait_until(lambda: httpx.post(f"{platform.base_url}/serving-endpoints/{endpoint}/invocations", headers=auth_headers(),
                                      json={"input": [{"role": "user", "content": "x"}]}).status_code == 200,
                   timeout=30, message="serving to resume")
        assert after.status_code in (200, 503)
    finally:
        platform.stop()
