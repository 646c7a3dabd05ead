"""Worker processes: crash isolation, restarts, workload sizes, scale to zero."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import mlflow

from agentwharf import agents
from tests.integration.conftest import ask, rows_for
from tests.integration.platform_process import pid_alive, wait_until


def pid_of(http, path) -> int:
    return ask(http, path).json()["custom_outputs"]["pid"]


def test_kill_9_of_one_worker_never_touches_another_endpoint(http, register):
    doomed_model, steady_model = register("info"), register("info")
    doomed = agents.deploy(doomed_model, "1")
    steady = agents.deploy(steady_model, "1")
    doomed_path = f"/serving-endpoints/{doomed.endpoint_name}/invocations"
    steady_path = f"/serving-endpoints/{steady.endpoint_name}/invocations"
    doomed_pid, steady_pid = pid_of(http, doomed_path), pid_of(http, steady_path)

    steady_statuses: list[int] = []
    doomed_statuses: list[int] = []
    stop = threading.Event()

    def drive(path, statuses):
        while not stop.is_set():
            statuses.append(ask(http, path).status_code)

    drivers = [threading.Thread(target=drive, args=(steady_path, steady_statuses), name="drive-steady"),
               threading.Thread(target=drive, args=(doomed_path, doomed_statuses), name="drive-doomed")]
    for thread in drivers:
        thread.start()
    time.sleep(0.5)
    os.kill(doomed_pid, signal.SIGKILL)
    # The supervisor restarts the killed worker (with back-off) and traffic comes back.
    new_pid = wait_until(lambda: (r := ask(http, doomed_path)).status_code == 200 and r.json()["custom_outputs"]["pid"],
                         timeout=60, message="the killed worker to be replaced")
    time.sleep(0.5)
    stop.set()
    for thread in drivers:
        thread.join()

    assert new_pid != doomed_pid
    assert set(steady_statuses) == {200} and len(steady_statuses) > 10
    assert pid_of(http, steady_path) == steady_pid
    assert set(doomed_statuses) <= {200, 503}
    agents.delete_deployment(doomed_model)
    agents.delete_deployment(steady_model)


def test_crashed_version_gets_503_json_while_others_serve(http, register):
    model = register("info", versions=2)
    v1 = agents.deploy(model, "1")
    v2 = agents.deploy(model, "2")
    pid = http.post(v2.query_endpoint, json={"input": [{"role": "user", "content": "x"}]}).json()["custom_outputs"]["pid"]
    crash = http.post(v2.query_endpoint, json={"input": [{"role": "user", "content": "x"}], "custom_inputs": {"crash": True}})
    assert crash.status_code == 503
    assert crash.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    # Version 1 on the same endpoint never notices.
    assert http.post(v1.query_endpoint, json={"input": [{"role": "user", "content": "x"}]}).status_code == 200
    wait_until(lambda: not pid_alive(pid), timeout=10, message="the crashed worker to be gone")
    recovered = wait_until(lambda: http.post(v2.query_endpoint, json={"input": [{"role": "user", "content": "x"}]}).status_code == 200,
                           timeout=60, message="version 2 to restart")
    assert recovered
    agents.delete_deployment(model)


def test_workload_size_sets_the_number_of_worker_processes(http, register):
    model = register("info")
    deployment = agents.deploy(model, "1", workload_size="Medium")
    path = f"/serving-endpoints/{deployment.endpoint_name}/invocations"
    results: list[int] = []

    def call():
        results.append(ask(http, path, sleep=0.3).json()["custom_outputs"]["pid"])

    threads = [threading.Thread(target=call, name=f"medium-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 2  # Medium = 2 processes, both given work
    agents.delete_deployment(model)


def test_scale_to_zero_stops_idle_workers_and_wakes_on_demand(http, register):
    model = register("info")
    deployment = agents.deploy(model, "1", scale_to_zero=True)
    path = f"/serving-endpoints/{deployment.endpoint_name}/invocations"
    pid = pid_of(http, path)
    # The test platform's idle time is 3 s.
    wait_until(lambda: not pid_alive(pid), timeout=30, message="the idle worker to stop")
    view = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}").json()
    assert "Scaled to zero" in view["config"]["served_entities"][0]["state"]["deployment_state_message"]
    # The next request waits for a fresh worker instead of failing.
    answer = ask(http, path)
    assert answer.status_code == 200
    assert answer.json()["custom_outputs"]["pid"] != pid
    agents.delete_deployment(model)


def test_deleting_a_deployment_stops_its_workers_and_removes_their_model_files(platform, http, register):
    model = register("info")
    deployment = agents.deploy(model, "1")
    info = ask(http, f"/serving-endpoints/{deployment.endpoint_name}/invocations").json()["custom_outputs"]
    files = Path(info["model_files"])
    # Fetched into the platform's run folder beside the worker's socket, not a temp folder
    # nothing would ever clean.
    assert (files / "MLmodel").is_file() and files.name.startswith("w-") and files.name.endswith(".model")
    assert files.parent == platform.run_dir
    agents.delete_deployment(model)
    wait_until(lambda: not pid_alive(info["pid"]), timeout=20, message="the worker to stop")
    wait_until(lambda: not files.exists(), timeout=10, message="the worker's model files to be removed")


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _spares_of(platform_pid: int) -> list[int]:
    """Pids of the platform's spare workers (``--spare`` in their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            is_spare = entry.name.isdigit() and b"agentwharf.serving.worker\0--spare" in (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid = int(entry.name) if is_spare else 0
        while pid > 1 and pid != platform_pid:
            pid = _parent(pid)
        if is_spare and pid == platform_pid:
            found.append(int(entry.name))
    return found


def _python_of(pid: int) -> bytes:
    return (Path(f"/proc/{pid}/cmdline")).read_bytes().split(b"\0")[0]


def _waiting_spare(platform_pid: int, python: bytes) -> int | None:
    """A spare of the runtime ``python`` done importing, not yet given a version: its output
    still goes to the platform (a pipe; an assigned one writes to its replica's log file) and its CPU
    time stands still (it blocks on stdin for its assignment). Other tests of the session may
    have left spares of other runtimes, and spares that now serve versions of their own."""
    for pid in _spares_of(platform_pid):
        with contextlib.suppress(OSError):
            if _python_of(pid) != python or os.readlink(f"/proc/{pid}/fd/1").startswith("/"):
                continue
            before = _cpu_ticks(pid)
            time.sleep(1.0)
            if _cpu_ticks(pid) == before:
                return pid
    return None


def test_a_deploy_on_a_used_runtime_is_served_by_a_warm_spare(platform, http, register):
    first, second = register("info"), register("info")
    deployed = agents.deploy(first, "1")  # its runtime has started a worker: a spare follows it
    worker = ask(http, f"/serving-endpoints/{deployed.endpoint_name}/invocations").json()["custom_outputs"]["pid"]
    python = _python_of(worker)
    spare = wait_until(lambda: _waiting_spare(platform.process.pid, python), timeout=90, message="a spare worker, ready")

    deployment = agents.deploy(second, "1", environment_vars={"SPARE_GREETING": "hola"})
    answer = ask(http, f"/serving-endpoints/{deployment.endpoint_name}/invocations",
                 env=["SPARE_GREETING", "AGENTWHARF_SERVED_ENTITY", "MLFLOW_TRACKING_TOKEN"])
    info = answer.json()["custom_outputs"]

    assert info["pid"] == spare  # started before the deploy, and it took the version's environment
    assert info["env"] == {"SPARE_GREETING": "hola", "AGENTWHARF_SERVED_ENTITY": deployment.served_entity_name,
                           "MLFLOW_TRACKING_TOKEN": None}
    request_id = answer.headers["x-agentwharf-request-id"]
    row = rows_for(http, deployment.endpoint_name, {request_id})[request_id]
    assert row["status_code"] == 200
    trace = mlflow.get_trace(row["trace_id"])
    assert trace.info.trace_metadata["agentwharf.request_id"] == request_id
    assert info["experiment_id"] == trace.info.experiment_id
    # Its output went to the replica's log like a fresh worker's (the logs API reads it).
    logs = http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}/served-models/"
                    f"{deployment.served_entity_name}/logs")
    assert logs.status_code == 200 and "ready on" in logs.text
    agents.delete_deployment(first)
    agents.delete_deployment(second)
