"""The Ray Serve worker runtime (``AGENTWHARF_RUNTIME=ray``) against a real local Ray cluster the
test starts (``ray start --head``): a served version is a Ray Serve application whose replicas
load the model; the gateway reaches them through Ray's handle, and every answer still has its
trace and inference row, streamed or not."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest

from agentwharf import agents
from agentwharf.errors import DeploymentFailed
from tests.integration.conftest import PLATFORM_ENV, ask, own_platform_with_info_agent, rows_for, sse_events
from tests.integration.platform_process import free_port, wait_until

RAY = str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 (its own temp dir: Ray's socket paths must be short).
    ``ray start --block`` stays in the foreground and takes down what it started when stopped,
    so this stops this cluster only (``ray stop`` would stop every Ray process of the machine)."""
    port, temp = free_port(), tempfile.mkdtemp(prefix="aw-ray-", dir="/tmp")
    # No idle workers started ahead for the first driver (the platform): it runs only actors
    # (Serve's controller, the replicas), which start workers of their own; on a busy machine
    # those prestarted processes only take CPU from them.
    # Stopped, it does not wait for its node to drain (30 s): the platform and its
    # applications are gone by then, and no other node could take anything over.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_prestart_worker_first_driver": "0",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    log = open(Path(temp) / "ray-start.log", "wb")
    head = subprocess.Popen([RAY, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
                             "--num-cpus=4", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
                             # Nothing here reads the node's logs through Ray (the platform joins with
                             # log_to_driver off): no process tailing them.
                             "--include-log-monitor=false"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: head.poll() is not None or b"Ray runtime started" in (Path(temp) / "ray-start.log").read_bytes(),
                   timeout=180, interval=0.5, message="the Ray cluster to start")
        assert head.poll() is None, (Path(temp) / "ray-start.log").read_text(errors="replace")[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(120)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def on_ray(ray_cluster, tmp_path_factory):
    """A platform whose served versions run on the Ray cluster; MLflow's client points at it."""
    env = {**PLATFORM_ENV, "AGENTWHARF_RUNTIME": "ray", "AGENTWHARF_RAY_ADDRESS": ray_cluster,
           "AGENTWHARF_RAY_REPLICA_CPUS": "0.5"}
    with own_platform_with_info_agent(tmp_path_factory.mktemp("ray") / "home", "/tests/ray", env) as started:
        yield started


def _process_name(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def test_a_version_served_by_ray_answers_streams_and_is_recorded(on_ray):
    platform, uri = on_ray
    model = f"main.ray.info{uuid.uuid4().hex[:6]}"
    mlflow.register_model(uri, model)
    deployment = agents.deploy(model, "1", environment_vars={"INFO_AGENT_PREFIX": "ray says "})
    http = httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=60)
    try:
        path = f"/serving-endpoints/{deployment.endpoint_name}/invocations"
        answer = ask(http, path, "hello", env=["AGENTWHARF_SERVED_ENTITY"])
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["output"][0]["content"][0]["text"] == "ray says Echo: hello"
        info = body["custom_outputs"]
        # Answered by a Ray Serve replica (Ray names its processes), with the version's environment.
        assert "ServeReplica" in _process_name(info["pid"]), _process_name(info["pid"])
        assert info["env"]["AGENTWHARF_SERVED_ENTITY"] == deployment.served_entity_name
        streamed = http.post(path, json={"input": [{"role": "user", "content": "again"}], "stream": True,
                                         "custom_inputs": {"events": 3}})
        assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
        events = sse_events(streamed)
        assert events[-1] == "[DONE]" and sum("part" in e for e in events) == 3
        # Each answer has its inference row and trace, as with local workers.
        ids = {answer.headers["x-request-id"], streamed.headers["x-request-id"]}
        rows = rows_for(http, deployment.endpoint_name, ids)
        assert {row["status_code"] for row in rows.values()} == {200}
        for row in rows.values():
            trace = wait_until(lambda r=row: mlflow.get_trace(r["trace_id"]), timeout=30, message="the trace")
            assert trace.info.request_metadata.get("agentwharf.served_entity") == deployment.served_entity_name
        # An agent's own error is the caller's 4xx/5xx JSON, recorded too.
        failed = ask(http, path, "x", **{"raise": "no thanks"})
        assert failed.status_code >= 400 and "no thanks" in failed.json()["message"]
    finally:
        agents.delete_deployment(model)
        http.close()
    gone = httpx.post(f"{platform.base_url}/serving-endpoints/{deployment.endpoint_name}/invocations",
                      headers=platform.headers, json={"input": [{"role": "user", "content": "hi"}]})
    assert gone.status_code == 404


def test_a_model_that_cannot_load_on_ray_fails_the_deploy_with_its_reason(on_ray, tmp_path):
    platform, uri = on_ray
    model = f"main.ray.broken{uuid.uuid4().hex[:6]}"
    mlflow.register_model(uri, model)
    marker = tmp_path / "refuse"
    marker.write_text("x")
    with pytest.raises(DeploymentFailed) as failed:
        agents.deploy(model, "1", environment_vars={"INFO_AGENT_FAIL_IF": str(marker)})
    # The deployer (CAN_MANAGE) reads the replica's own error.
    assert "failed to start" in failed.value.message and "load refused" in failed.value.message, failed.value.message
    # Nothing of it is left on the cluster or the endpoint.
    listed = httpx.get(f"{platform.base_url}/api/2.0/serving-endpoints", headers=platform.headers).json()
    assert not any(model.replace(".", "-") in e["name"] for e in listed.get("endpoints", []) if e["state"]["ready"] == "READY")


def test_workload_size_is_ray_replicas_and_scale_to_zero_frees_them(on_ray):
    platform, uri = on_ray
    model = f"main.ray.sized{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        mlflow.register_model(uri, model)
    http = httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=120)
    try:
        # Medium: two replicas, both answering (Ray's router spreads the calls).
        medium = agents.deploy(model, "1", workload_size="Medium")
        path = f"/serving-endpoints/{medium.endpoint_name}/invocations"
        pids = {ask(http, path, f"hi {i}").json()["custom_outputs"]["pid"] for i in range(40)}
        assert len(pids) == 2 and all("ServeReplica" in _process_name(p) for p in pids), pids
        # Scale to zero: idle past AGENTWHARF_SCALE_TO_ZERO_IDLE_SECONDS (3 s here), Ray stops it.
        idle = agents.deploy(model, "2", scale_to_zero=True, endpoint_name=f"{medium.endpoint_name}-idle")
        path = f"/serving-endpoints/{idle.endpoint_name}/invocations"
        [first] = {ask(http, path, "hi").json()["custom_outputs"]["pid"]}
        wait_until(lambda: not Path(f"/proc/{first}").exists(), timeout=120, interval=1,
                   message="the idle version's replica to stop")
        # The next call starts one again and is answered.
        again = ask(http, path, "wake up")
        assert again.status_code == 200, again.text
        assert again.json()["custom_outputs"]["pid"] != first
    finally:
        agents.delete_deployment(model)
        http.close()
