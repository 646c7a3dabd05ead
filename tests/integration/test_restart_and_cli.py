"""Stopping and restarting a platform on the same home, and the `agentwharf` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import mlflow
import pytest

from agentwharf import agents

from tests.integration.platform_process import PlatformProcess, auth_headers, pid_alive, wait_until

AGENTS = os.path.join(os.path.dirname(__file__), "agents")


def cli(base_url: str | None, *args: str, home: str | None = None, check: bool = False,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", **({"AGENTWHARF_HOST": base_url} if base_url else {}), **(env or {})}
    command = [sys.executable, "-m", "agentwharf.cli.main", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture
def own_platform(tmp_path):
    """A platform of this test's own, since the test stops and restarts it. No warm spares
    (AGENTWHARF_WORKER_SPARES=0): each version is deployed as soon as the one before answers,
    sooner than a spare is ready, and the restart starts them all at once, so a spare is never
    taken here and only takes CPU from the worker starts the test waits for."""
    proc = PlatformProcess(tmp_path / "home", env={"AGENTWHARF_WORKER_SPARES": "0"})
    yield proc
    proc.stop()


def test_restart_restores_endpoints_and_workers(own_platform):
    base = own_platform.start().base_url
    os.environ.update(own_platform.client_env())
    client = mlflow.MlflowClient(base)
    mlflow.set_tracking_uri(base)
    mlflow.set_experiment("/tests/restart")  # not the session platform's active experiment
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="agent", python_model=os.path.join(AGENTS, "info_agent.py"), pip_requirements=["mlflow"]).model_uri
    mlflow.register_model(uri, "main.restart.info")
    mlflow.register_model(uri, "main.restart.info")
    # v1 from this process (test_cli_deploy_query_and_endpoints runs the CLI's plain deploy), v2
    # with the CLI's --workload-size: one CLI process fewer, the same two served versions.
    agents.deploy("main.restart.info", "1")
    cli(base, "deploy", "main.restart.info", "2", "--workload-size", "Medium", check=True)
    endpoint = "agents_main-restart-info"
    body = {"input": [{"role": "user", "content": "x"}]}
    before = httpx.get(f"{base}/api/2.0/serving-endpoints/{endpoint}", headers=auth_headers()).json()
    old_pid = httpx.post(f"{base}/serving-endpoints/{endpoint}/invocations", json=body, headers=auth_headers()).json()["custom_outputs"]["pid"]

    # SIGTERM (what `agentwharf down` and Ctrl-C send) stops the platform and reaps its workers.
    # (uvicorn re-raises the signal after its graceful shutdown, hence -SIGTERM.)
    assert own_platform.stop() in (0, -signal.SIGTERM)
    assert not pid_alive(old_pid)
    log = (own_platform.home / "logs" / "platform.log").read_text()
    assert "stopping: workers, then MLflow" in log
    # Months of restarts and a chatty agent: logs of children over 50 MiB are set aside at
    # their next start (one old copy kept), never grown without bound.
    worker_log = own_platform.home / "logs" / "workers" / endpoint / "main-restart-info_2-0.log"
    mlflow_log = own_platform.home / "logs" / "mlflow.log"
    for grown in (worker_log, mlflow_log):
        with open(grown, "ab") as out:
            out.write(b"an old line of a long life\n" * (2 * 1024 * 1024))

    own_platform.start()
    after = wait_until(lambda: (v := httpx.get(f"{base}/api/2.0/serving-endpoints/{endpoint}", headers=auth_headers()).json())["state"]["ready"] == "READY" and v,
                       timeout=120, message="the endpoint to be restored")
    assert after["config"]["traffic_config"] == before["config"]["traffic_config"]
    assert [e["name"] for e in after["config"]["served_entities"]] == [e["name"] for e in before["config"]["served_entities"]]
    assert after["config"]["served_entities"][1]["workload_size"] == "Medium"
    answer = httpx.post(f"{base}/serving-endpoints/{endpoint}/invocations", json=body, headers=auth_headers())
    assert answer.status_code == 200
    assert answer.json()["custom_outputs"]["entity"] == "main-restart-info_2"
    assert client.get_registered_model("main.restart.info").name == "main.restart.info"
    for grown in (worker_log, mlflow_log):
        assert grown.stat().st_size < 1024 * 1024 and b"an old line" not in grown.read_bytes()
        assert grown.with_name(grown.name + ".1").stat().st_size > 50 * 1024 * 1024
    logs = httpx.get(f"{base}/api/2.0/serving-endpoints/{endpoint}/served-models/main-restart-info_2/logs",
                     headers=auth_headers())
    assert logs.status_code == 200 and "ready on" in logs.text and "an old line" not in logs.text


def test_down_stops_a_detached_platform(tmp_path):
    home = tmp_path / "detached"
    from tests.integration.platform_process import free_port

    port = str(free_port())
    base = f"http://127.0.0.1:{port}"
    up = cli(base, "up", "--detach", "--home", str(home), "--port", port)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"agentwharf is up at {base}" in up.stdout
    assert f"export AGENTWHARF_HOST={base} AGENTWHARF_TOKEN=$(cat {home.resolve()}/admin.token)" in up.stdout
    pid = json.loads((home / "platform.pid").read_text())["pid"]
    assert cli(base, "status", check=True).stdout.startswith("up at")
    # The home's recorded URL and admin token are enough: no variable names the platform.
    bare = {"AGENTWHARF_HOST": "", "AGENTWHARF_TOKEN": "", "MLFLOW_TRACKING_URI": "", "MLFLOW_TRACKING_TOKEN": ""}
    found = cli(None, "status", "--home", str(home), "--json", env=bare, check=True)
    assert json.loads(found.stdout)["pid"] == pid
    # --host wins over the environment.
    assert cli("http://127.0.0.1:1", "status", "--host", base, check=True).stdout.startswith("up at")
    # A second `up` on the same home does not start a second platform, nor one on another port.
    again = cli(base, "up", "--detach", "--home", str(home), "--port", port, check=True)
    assert str(pid) in again.stdout
    other = cli(base, "up", "--detach", "--home", str(home), "--port", str(free_port()))
    assert other.returncode == 1 and f"already runs on home {home} at {base}" in other.stderr.replace("\n", "")

    # The platform's console (`up` in the foreground prints the same) carries no library's
    # deprecation notice, after a control-plane answer and an error among its requests.
    assert cli(base, "status", "--home", str(home), check=True)
    admin = {"Authorization": f"Bearer {(home / 'admin.token').read_text().strip()}"}
    assert httpx.get(f"{base}/api/2.0/serving-endpoints/nope", headers=admin).status_code == 404
    console = (home / "logs" / "platform.out").read_text()
    assert "Warning" not in console, console

    down = cli(base, "down", "--home", str(home), check=True)
    assert f"Stopped agentwharf (pid {pid}" in down.stdout
    wait_until(lambda: not pid_alive(pid), timeout=30, message="the platform to exit")
    assert not (home / "platform.pid").exists()
    assert "No platform is running" in cli(base, "down", "--home", str(home), check=True).stdout
    status = cli(base, "status")
    assert status.returncode != 0 and "No agentwharf platform answers" in status.stderr


def test_up_refuses_a_port_in_use(platform, tmp_path):
    result = cli(platform.base_url, "up", "--home", str(tmp_path / "other"), "--port", str(platform.port))
    assert result.returncode != 0
    assert f"Port {platform.port}" in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_deploy_query_and_endpoints(platform, register):
    model = register("info")
    base = platform.base_url
    deploy = cli(base, "deploy", model, "1", check=True)
    endpoint = f"agents_{model.replace('.', '-')}"
    assert f"Deployed {model} version 1 to endpoint {endpoint}" in deploy.stdout

    assert cli(base, "query", endpoint, "hello cli", check=True).stdout.strip() == "Echo: hello cli"
    streamed = cli(base, "query", endpoint, "hello stream", "--stream", check=True).stdout
    # Printed once, as it streams: the final event repeats the streamed item and is not printed.
    assert streamed.strip() == "part0 part1 part2"

    listing = cli(base, "endpoints", "list", check=True).stdout
    # Piped, a table is tab-separated lines, every value whole.
    assert f"{endpoint}\tREADY\tNOT_UPDATING\t{model.replace('.', '-')}_1=100%" in listing.splitlines()
    assert endpoint in [e["name"] for e in json.loads(cli(base, "endpoints", "list", "--json", check=True).stdout)]
    shown = json.loads(cli(base, "endpoints", "get", endpoint, "--json", check=True).stdout)
    assert shown["name"] == endpoint
    summary = cli(base, "endpoints", "get", endpoint, check=True).stdout
    assert f"{model.replace('.', '-')}_1\t{model} v1\t100%\tSmall\tDEPLOYMENT_READY" in summary
    state = json.loads(cli(base, "status", "--json", check=True).stdout)
    assert {"name": endpoint, "ready": "READY", "config_update": "NOT_UPDATING",
            "versions": {f"{model.replace('.', '-')}_1": "DEPLOYMENT_READY"}} in state["endpoint_states"]

    worker_log = cli(base, "logs", endpoint, check=True).stdout
    assert "agentwharf.worker: ready on" in worker_log
    build_log = cli(base, "logs", endpoint, "--build", check=True).stdout
    assert "environment" in build_log and "ready on" in build_log
    follow = subprocess.Popen([sys.executable, "-m", "agentwharf.cli.main", "logs", endpoint, "--follow"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "AGENTWHARF_HOST": base})
    try:
        shown = ""
        while "ready on" not in shown and (line := follow.stdout.readline()):
            shown += line
        assert "ready on" in shown
        # Past its next poll of the log (once a second), it is still following: not exited.
        time.sleep(1.5)
        assert follow.poll() is None
    finally:
        follow.terminate()
        follow.communicate(timeout=10)

    assert "Deleted endpoint" in cli(base, "endpoints", "delete", endpoint, "--yes", check=True).stdout
    missing = cli(base, "endpoints", "get", endpoint)
    assert missing.returncode == 1
    assert "does not exist (RESOURCE_DOES_NOT_EXIST)" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy", "main.tests.nothere", "1"], "does not exist"),
        (["deploy", "main.tests.x", "1", "--env", "NOEQUALS"], "KEY=VALUE"),
        (["deploy", "main.tests.x", "1", "--env", "lower=1"], "UPPERCASE"),
        (["query", "no-such-endpoint", "hi"], "does not exist"),
        (["deploy", "main.tests.x", "1", "--workload-size", "Huge"], "'Huge' is not one of"),
    ],
)
def test_cli_errors_are_one_clear_line(platform, args, message):
    result = cli(platform.base_url, *args)
    assert result.returncode in (1, 2)  # 2: a usage error, as Typer reports it
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_version_and_json_for_scripts(platform):
    assert cli(None, "--version", check=True).stdout.strip().startswith("agentwharf ")
    tokens = json.loads(cli(platform.base_url, "tokens", "list", "--json", check=True).stdout)
    assert tokens and all(len(t["token_id"]) >= 16 for t in tokens)
    piped = cli(platform.base_url, "tokens", "list", check=True).stdout.splitlines()
    assert piped[0].split("\t")[:2] == ["token id", "owner"]
    assert {line.split("\t")[0] for line in piped[1:]} == {t["token_id"] for t in tokens}  # never cut
    users = json.loads(cli(platform.base_url, "users", "list", "--json", check=True).stdout)
    assert "admin" in [u["userName"] for u in users]
