"""Fault injection: processes killed and stopped under load, hostile clients, a full disk.

Each scenario asserts the platform's promises: no acknowledged request without exactly one
trace and one inference row, no error answer that is not JSON, and the platform serving
afterwards. The figures of each scenario (sent, acknowledged, stored, 5xx) are printed in the
session summary.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.integration.load import BODY, Ledger, Load, child_pid, deploy_info, writer_pid
from tests.integration.platform_process import PlatformProcess, client_state, pid_alive, wait_until

FAULT_ENV = {
    "AGENTWHARF_HEADER_TIMEOUT": "2",
    "AGENTWHARF_MLFLOW_PROXY_TIMEOUT": "3",
    "AGENTWHARF_LIMIT_CONCURRENCY": "40",
    "AGENTWHARF_RESTART_BACKOFF_MIN": "0.2",
    "AGENTWHARF_RESTART_BACKOFF_MAX": "1",
    # No internet here (as on many CI machines): MLflow's server is told so (its documented
    # air-gapped setting), or garbage to its supported-models route fetches each provider's
    # catalog from GitHub with retries for minutes, answered 504 by the proxy meanwhile, and
    # its graceful shutdown waits for that (an orphan kept running minutes after kill -9).
    "MLFLOW_MODEL_CATALOG_URI": "",
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    platform = PlatformProcess(tmp_path_factory.mktemp("faults") / "home", env=FAULT_ENV).start()
    with client_state():
        os.environ.update(platform.client_env())
        platform.endpoint = deploy_info(platform.base_url, f"main.faults.info{uuid.uuid4().hex[:6]}")
        platform.path = f"/serving-endpoints/{platform.endpoint}/invocations"
        yield platform
        platform.stop()


def serves(platform: PlatformProcess) -> bool:
    answer = httpx.post(f"{platform.base_url}{platform.path}", json=BODY, headers=platform.headers, timeout=30)
    return answer.status_code == 200


def test_kill_9_of_a_worker_under_load(faulty):
    ledger = Ledger("kill -9 worker")
    with Load(faulty, faulty.path, ledger) as load:
        load.wait_for(100)
        pid = httpx.post(f"{faulty.base_url}{faulty.path}", json=BODY, headers=faulty.headers).json()["custom_outputs"]["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: serves(faulty), timeout=60, message="the worker to be replaced")
        load.wait_for(len(ledger.acknowledged) + 50)
    ledger.verify(faulty)
    assert set(ledger.statuses) <= {200, 503}


def test_kill_9_of_the_writer_under_load(faulty):
    ledger = Ledger("kill -9 writer")
    with Load(faulty, faulty.path, ledger) as load:
        load.wait_for(100)
        old = writer_pid(faulty)
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: writer_pid(faulty) not in (None, old), timeout=30, message="a new writer")
        load.wait_for(len(ledger.acknowledged) + 100)
    ledger.verify(faulty)
    assert set(ledger.statuses) == {200}


def test_sigstop_of_the_writer_under_load(faulty):
    ledger = Ledger("SIGSTOP writer")
    with Load(faulty, faulty.path, ledger) as load:
        load.wait_for(50)
        writer = writer_pid(faulty)
        os.kill(writer, signal.SIGSTOP)
        try:
            # Answers go on while the spool holds what the writer cannot store.
            load.wait_for(len(ledger.acknowledged) + 100)
        finally:
            os.kill(writer, signal.SIGCONT)
    ledger.verify(faulty)
    assert set(ledger.statuses) == {200}


def _raw(platform: PlatformProcess, data: bytes, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", platform.port), timeout=10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def _request(platform: PlatformProcess, body: bytes, length: int | None = None) -> bytes:
    head = (f"POST {platform.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {platform.token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) if length is None else length}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def test_hostile_bodies_get_json_errors_and_leave_the_platform_serving(faulty):
    ledger = Ledger("hostile bodies")
    deep: list = []
    for _ in range(600):
        deep = [deep]
    with httpx.Client(base_url=faulty.base_url, timeout=60, headers=faulty.headers) as client:
        for body, expected in ((b"x" * (17 * 1024 * 1024), 413),
                               (b'{"input": [{"role": "user", "content": "\xff\xfe bad utf-8"}]}', 400),
                               (b'{"input": [{"role": "user", "content": "cut', 400),
                               (b"[" * 2000 + b"]" * 2000, 400),
                               (b"\x00\x01\x02", 400)):
            client_id = f"hostile-{uuid.uuid4().hex[:12]}"
            answer = client.post(faulty.path, content=body, headers={"content-type": "application/json", "x-request-id": client_id})
            ledger.sent += 1
            ledger.note(answer, client_id)
            assert answer.status_code == expected, (body[:40], answer.status_code, answer.text[:200])
        for _ in range(3):
            ledger.send(client, faulty.path, {**BODY, "custom_inputs": {"deep": deep}})
        # The same client id, three times: three rows, three traces.
        for _ in range(3):
            ledger.send(client, faulty.path, client_id="hostile-same-id")
    # A body cut short (the client announces more than it sends, then leaves) and headers that
    # are not HTTP: nothing is acknowledged, nothing hangs.
    _raw(faulty, _request(faulty, b'{"input": [', length=500), read=False)
    not_http = _raw(faulty, b"NOT HTTP AT ALL\r\n\r\n")
    assert not_http.startswith(b"HTTP/1.1 400") and b"application/json" in not_http and b'"error_code"' in not_http
    assert serves(faulty)
    assert ledger.acknowledged.count("hostile-same-id") == 3
    ledger.verify(faulty)  # three rows and three traces for the id sent three times
    assert ledger.statuses[400] >= 7 and ledger.statuses[413] == 1


def test_slow_clients_are_cut_off_and_others_are_served(faulty):
    sockets = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", faulty.port), timeout=10)
        sock.sendall(b"POST /serving-endpoints/x/invocations HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        sockets.append(sock)
    try:
        assert serves(faulty)  # while 200 sockets dawdle
        started = time.monotonic()
        answers = [s.recv(4096) for s in sockets]
        assert time.monotonic() - started < 10
        assert all(a.startswith(b"HTTP/1.1 408") and b'"error_code":"REQUEST_TIMEOUT"' in a for a in answers), answers[0]
    finally:
        for sock in sockets:
            sock.close()


def test_requests_past_the_concurrency_limit_get_503_json(faulty):
    ledger = Ledger("concurrency limit")
    body = {**BODY, "custom_inputs": {"sleep": 2}}
    import concurrent.futures

    with httpx.Client(base_url=faulty.base_url, timeout=60, headers=faulty.headers,
                      limits=httpx.Limits(max_connections=80)) as client:
        with concurrent.futures.ThreadPoolExecutor(60, thread_name_prefix="over-limit") as pool:
            answers = list(pool.map(lambda _: ledger.send(client, faulty.path, body), range(60)))
    refused = [a for a in answers if a is not None and a.status_code == 503]
    assert refused and all(a.headers["retry-after"] and a.json()["error_code"] == "TEMPORARILY_UNAVAILABLE" for a in refused)
    assert "AGENTWHARF_LIMIT_CONCURRENCY" in refused[0].json()["message"]
    assert ledger.statuses[200] >= 16
    ledger.verify(faulty)


def test_mlflow_silent_or_failing_is_answered_in_json(faulty):
    mlflow_pid = child_pid(faulty, b"agentwharf.platform.mlflow_exec")  # MLflow's server (its uvicorn runs in it)
    os.kill(mlflow_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = httpx.get(f"{faulty.base_url}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                           headers=faulty.headers, timeout=30)
        assert time.monotonic() - started < 10
        assert answer.status_code == 504 and answer.json()["error_code"] == "DEADLINE_EXCEEDED"
        assert serves(faulty)  # serving needs no MLflow
    finally:
        os.kill(mlflow_pid, signal.SIGCONT)
    graphql = httpx.post(f"{faulty.base_url}/graphql", content=b"{}", headers={**faulty.headers, "content-type": "application/json"})
    assert graphql.status_code >= 400 and graphql.headers["content-type"] == "application/json", graphql.text[:300]
    assert graphql.json()["error_code"]


def _every_route() -> set[tuple[str, str]]:
    """Every route the platform answers: its control plane and facades (their routers), the
    gateway, and MLflow's server (its Flask rules), path parameters filled with ``x``."""
    from mlflow.server import app as mlflow_flask

    from agentwharf import databricks_compat
    from agentwharf.control.access_routes import router as access_router
    from agentwharf.control.routes import router as control_router

    routes: set[tuple[str, str]] = {("POST", "/serving-endpoints/x/invocations"), ("POST", "/serving-endpoints/responses"),
                                    ("POST", "/serving-endpoints/chat/completions"), ("GET", "/serving-endpoints/x/invocations"),
                                    ("POST", "/serving-endpoints/x/served-models/x/invocations"), ("GET", "/no/such/route"),
                                    ("POST", "/graphql"), ("GET", "/metrics")}
    for router in (control_router, access_router, *databricks_compat.ROUTERS):
        routes |= {(method, route.path) for route in router.routes for method in route.methods}
    for rule in mlflow_flask.url_map.iter_rules():
        routes |= {(method, rule.rule) for method in rule.methods - {"OPTIONS", "HEAD"}}
    concrete = set()
    for method, path in routes:
        path = path.replace("<path:", "<").replace("{", "<").replace("}", ">")
        while "<" in path:
            start, end = path.index("<"), path.index(">")
            path = path[:start] + "x" + path[end + 1:]
        concrete.add((method, path))
    return concrete


def test_no_route_answers_an_error_that_is_not_json(faulty):
    """Garbage to every route, as the admin (so every check is passed and the handlers run)."""
    routes = sorted(_every_route())
    assert len(routes) > 300
    not_json, statuses = [], {}
    with httpx.Client(base_url=faulty.base_url, timeout=30, headers=faulty.headers) as client:
        for method, path in routes:
            body = {"content": b"\xff{not json", "headers": {"content-type": "application/json"}} if method != "GET" else {}
            answer = client.request(method, path, params={"x": "\u0000'\"<>"}, **body)
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
            if answer.status_code >= 400 and not answer.headers.get("content-type", "").startswith("application/json"):
                not_json.append((method, path, answer.status_code, answer.headers.get("content-type"), answer.text[:120]))
    from tests.integration.load import FIGURES

    FIGURES.append(f"garbage to every route: {len(routes)} routes, statuses {dict(sorted(statuses.items()))}, "
                   f"non-JSON errors {len(not_json)}")
    assert not_json == []
    assert serves(faulty)


def test_kill_9_of_the_platform_with_its_writer_stopped(faulty):
    """Last: the platform dies while its writer is stopped (the stopped writer outlives it); the
    next start ends that writer, and exactly one writer stores everything, exactly once."""
    ledger = Ledger("kill -9 platform, writer stopped")
    with Load(faulty, faulty.path, ledger) as load:
        load.wait_for(100)
        stale = writer_pid(faulty)
        mlflow_server = child_pid(faulty, b"agentwharf.platform.mlflow_exec")
        assert mlflow_server is not None
        os.kill(stale, signal.SIGSTOP)
        load.wait_for(len(ledger.acknowledged) + 100)
        os.kill(faulty.process.pid, signal.SIGKILL)
        faulty.process.wait()
    assert pid_alive(stale)  # stopped: SIGTERM from its parent's death waits
    # MLflow's server ends with the platform (its graceful shutdown is bounded): no orphan.
    wait_until(lambda: not pid_alive(mlflow_server), timeout=30, message="the dead platform's MLflow server to exit")
    faulty.start()
    wait_until(lambda: not pid_alive(stale), timeout=30, message="the stale writer to be ended")
    assert writer_pid(faulty) != stale
    wait_until(lambda: serves(faulty), timeout=120, message="serving after the restart")
    ledger.verify(faulty)
    # The restored worker fetched its model's files into the run folder (the first start's
    # environment build fetched them into the home's models folder, which the restart reuses
    # only for the environment), and only its own are there.
    answer = httpx.post(f"{faulty.base_url}{faulty.path}", json=BODY, headers=faulty.headers, timeout=30)
    files = Path(answer.json()["custom_outputs"]["model_files"])
    assert (files / "MLmodel").is_file() and files.parent == faulty.run_dir
    assert list(faulty.run_dir.glob("w-*.model")) == [files]


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(f"/tmp/agentwharf-tmpfs-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)], capture_output=True).returncode == 0
        if mounted:
            subprocess.run(["umount", str(probe)], check=True)
        return mounted
    finally:
        probe.rmdir()


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="mounting a small tmpfs as the home needs root (CAP_SYS_ADMIN)")
def test_a_full_disk_refuses_work_in_json_and_loses_nothing(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(disk)], check=True)
    # No free-space margin: requests meet the full disk itself (the spool's write fails).
    platform = PlatformProcess(disk / "home", env={"AGENTWHARF_MIN_FREE_DISK_BYTES": "0"})
    try:
        platform.start()
        os.environ.update(platform.client_env())
        platform.path = f"/serving-endpoints/{deploy_info(platform.base_url, 'main.disk.info')}/invocations"
        ledger = Ledger("disk full")
        filler = disk / "filler"
        with Load(platform, platform.path, ledger, threads=4) as load:
            load.wait_for(50)
            # Fill the disk to the last byte while requests keep coming.
            with open(filler, "wb") as out:
                try:
                    while True:
                        out.write(b"\0" * (1024 * 1024))
                        out.flush()
                except OSError:
                    pass
            wait_until(lambda: ledger.statuses[507] >= 20, timeout=60, message="requests refused for the full disk")
            refused = httpx.post(f"{platform.base_url}{platform.path}", json=BODY, headers=platform.headers, timeout=30)
            assert refused.status_code == 507 and refused.json()["error_code"] == "INSUFFICIENT_STORAGE"
            assert "not acknowledged" in refused.json()["message"]
            filler.unlink()
            wait_until(lambda: serves(platform), timeout=60, message="serving once space is free")
            load.wait_for(len(ledger.acknowledged) + 50)
        ledger.verify(platform)
    finally:
        platform.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)
