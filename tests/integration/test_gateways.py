"""Gateway processes (``agentwharf gateway``): two of them behind nginx serve the platform's
endpoints from the state it publishes in the database, and one killed under load loses nothing."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.load import BODY, Ledger, Load, deploy_info
from tests.integration.platform_process import GatewayProcessRunner, PlatformProcess, client_state, pid_alive, wait_until
from tests.integration.services import Nginx

ENV = {"AGENTWHARF_RESTART_BACKOFF_MIN": "0.2", "AGENTWHARF_RESTART_BACKOFF_MAX": "1",
       "AGENTWHARF_SCALE_TO_ZERO_IDLE_SECONDS": "3"}


@dataclass
class Front:
    """What ``Load`` and ``Ledger`` need of a platform, for nginx in front of the gateways."""

    base_url: str
    headers: dict
    database_url: str


@contextlib.contextmanager
def gateway_cluster(home: Path, env: dict[str, str]):
    """A platform (``env`` its settings) with the info agent deployed, two gateway processes
    and nginx in front of them; all stopped at the end."""
    control = PlatformProcess(home, env=env).start()
    gateways = []
    nginx = None
    with client_state():
        try:
            os.environ.update(control.client_env())
            # The gateways start (imports, then reading the published state) while the agent deploys.
            gateways = [GatewayProcessRunner(home, control.base_url, index, env=env).launch() for index in (1, 2)]
            control.endpoint = deploy_info(control.base_url, f"main.gateways.info{uuid.uuid4().hex[:6]}")
            control.path = f"/serving-endpoints/{control.endpoint}/invocations"
            for gateway in gateways:
                gateway.wait_ready()
                # Started before the deploy, it serves the endpoint once the published state says so.
                wait_until(lambda g=gateway: _ask(g.base_url, control.path, control.headers).status_code == 200,
                           timeout=10, message=f"gateway {gateway.index} to serve the endpoint")
            nginx = Nginx(control.port, [g.port for g in gateways]).start()
            control.gateways, control.nginx = gateways, nginx
            control.front = Front(nginx.base_url, control.headers, control.database_url)
            yield control
        finally:
            if nginx is not None:
                nginx.stop()
            for gateway in gateways:
                gateway.stop()
            control.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with gateway_cluster(tmp_path_factory.mktemp("gateways") / "home", ENV) as control:
        yield control


def _ask(base_url: str, path: str, headers: dict) -> httpx.Response:
    return httpx.post(f"{base_url}{path}", json=BODY, headers=headers, timeout=30)


def test_each_gateway_serves_the_endpoint_and_stores_its_records(cluster):
    ledger = Ledger("gateways")
    with httpx.Client(base_url=cluster.nginx.base_url, headers=cluster.headers, timeout=30) as client:
        for index in range(40):
            answer = ledger.send(client, cluster.path, stream=index % 4 == 0)
            assert answer is not None and answer.status_code == 200, answer and answer.text
    for gateway in cluster.gateways:
        direct = _ask(gateway.base_url, cluster.path, cluster.headers)
        assert direct.status_code == 200, direct.text
        assert gateway.health()["spool"]["records"] > 0  # nginx spread the load over both
        assert httpx.get(f"{gateway.base_url}/metrics").status_code == 401  # as the platform's
        scraped = httpx.get(f"{gateway.base_url}/metrics", headers=cluster.headers).text  # its own requests
        assert f'agentwharf_requests_total{{endpoint="{cluster.endpoint}"' in scraped
        assert "agentwharf_spool_records_total" in scraped
    ledger.verify(cluster.front)
    # The rest of the platform (control plane, MLflow) is the control process's, through nginx too.
    answer = httpx.get(f"{cluster.nginx.base_url}/api/2.0/serving-endpoints/{cluster.endpoint}", headers=cluster.headers)
    assert answer.status_code == 200 and answer.json()["state"]["ready"] == "READY"


def test_a_gateway_answers_only_the_serving_routes(cluster):
    gateway = cluster.gateways[0]
    answer = httpx.get(f"{gateway.base_url}/api/2.0/serving-endpoints", headers=cluster.headers)
    assert answer.status_code == 404
    assert cluster.base_url in answer.json()["message"]
    unknown = httpx.post(f"{gateway.base_url}/serving-endpoints/no-such-endpoint/invocations", json=BODY, headers=cluster.headers)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    anonymous = httpx.post(f"{gateway.base_url}{cluster.path}", json=BODY)
    assert anonymous.status_code == 401 and anonymous.json()["error_code"] == "UNAUTHENTICATED"


def test_changes_made_on_the_control_process_reach_every_gateway(cluster):
    # A token created on the control process works at once on every gateway; revoked, it stops.
    created = httpx.post(f"{cluster.base_url}/api/2.0/token/create", json={"comment": "gateways"}, headers=cluster.headers).json()
    headers = {"Authorization": f"Bearer {created['token_value']}"}
    for gateway in cluster.gateways:
        wait_until(lambda g=gateway: _ask(g.base_url, cluster.path, headers).status_code == 200, timeout=10,
                   message="the new token to work on the gateway")
    revoked = httpx.post(f"{cluster.base_url}/api/2.0/token/delete", json={"token_id": created["token_info"]["token_id"]},
                         headers=cluster.headers)
    assert revoked.status_code == 200, revoked.text
    for gateway in cluster.gateways:
        wait_until(lambda g=gateway: _ask(g.base_url, cluster.path, headers).status_code == 401, timeout=10,
                   message="the revoked token to be refused on the gateway")
    # An endpoint created after the gateways started is served by them.
    with client_state():
        os.environ.update(cluster.client_env())
        endpoint = deploy_info(cluster.base_url, f"main.gateways.late{uuid.uuid4().hex[:6]}")
    path = f"/serving-endpoints/{endpoint}/invocations"
    for gateway in cluster.gateways:
        wait_until(lambda g=gateway: _ask(g.base_url, path, cluster.headers).status_code == 200, timeout=10,
                   message="the new endpoint to be served by the gateway")
    # Deleted on the control process, it is gone from the gateways too.
    deleted = httpx.delete(f"{cluster.base_url}/api/2.0/serving-endpoints/{endpoint}", headers=cluster.headers)
    assert deleted.status_code == 200, deleted.text
    for gateway in cluster.gateways:
        wait_until(lambda g=gateway: _ask(g.base_url, path, cluster.headers).status_code == 404, timeout=10,
                   message="the deleted endpoint to be gone from the gateway")


def _pid(base_url: str, path: str, headers: dict) -> int:
    answer = _ask(base_url, path, headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["custom_outputs"]["pid"]


def test_traffic_on_gateways_keeps_a_version_up_and_a_gateway_wakes_it_from_zero(cluster):
    with client_state():
        os.environ.update(cluster.client_env())
        endpoint = deploy_info(cluster.base_url, f"main.gateways.idle{uuid.uuid4().hex[:6]}", scale_to_zero=True)
    path = f"/serving-endpoints/{endpoint}/invocations"
    first, second = cluster.gateways
    wait_until(lambda: _ask(first.base_url, path, cluster.headers).status_code == 200, timeout=10,
               message="the gateway to serve the new endpoint")
    pid = _pid(first.base_url, path, cluster.headers)
    # Busy through the gateways only, for twice the idle timeout (3 s): the platform counts
    # that traffic, so it never scales the version to zero meanwhile.
    until = time.monotonic() + 7
    while time.monotonic() < until:
        assert _pid(first.base_url, path, cluster.headers) == pid
        time.sleep(0.5)
    wait_until(lambda: not pid_alive(pid), timeout=30, message="the idle version to be scaled to zero")
    # A request to the other gateway starts it again, and waits for it rather than failing.
    assert _pid(second.base_url, path, cluster.headers) != pid
    httpx.delete(f"{cluster.base_url}/api/2.0/serving-endpoints/{endpoint}", headers=cluster.headers).raise_for_status()


def test_a_rate_limit_holds_across_gateways(cluster):
    limits = f"{cluster.base_url}/api/2.0/serving-endpoints/{cluster.endpoint}/ai-gateway"
    put = httpx.put(limits, json={"rate_limits": [{"calls": 4, "key": "endpoint", "renewal_period": "minute"}]},
                    headers=cluster.headers)
    assert put.status_code == 200, put.text
    try:
        servers = [g.base_url for g in cluster.gateways] + [cluster.base_url]
        time.sleep(1.0)  # ten rounds of the published state: every gateway has the limit
        statuses = []
        for index in range(12):  # one after another, across both gateways and the platform itself
            statuses.append(_ask(servers[index % 3], cluster.path, cluster.headers).status_code)
            time.sleep(0.3)  # more than the processes' exchange of counts (0.1 s)
        assert sorted(statuses) == [200] * 4 + [429] * 8, statuses
        refused = _ask(cluster.gateways[1].base_url, cluster.path, cluster.headers)
        assert refused.json()["error_code"] == "REQUEST_LIMIT_EXCEEDED" and int(refused.headers["retry-after"]) >= 1
    finally:
        httpx.put(limits, json={"rate_limits": []}, headers=cluster.headers).raise_for_status()
        wait_until(lambda: _ask(cluster.gateways[0].base_url, cluster.path, cluster.headers).status_code == 200, timeout=10,
                   message="the limit to be lifted")


def test_kill_9_of_a_gateway_under_load_loses_no_acknowledged_request(cluster):
    ledger = Ledger("kill -9 gateway")
    victim = cluster.gateways[0]
    with Load(cluster.front, cluster.path, ledger) as load:
        load.wait_for(100)
        victim.kill()  # SIGKILL: its spool keeps what it acknowledged and did not store yet
        acknowledged = len(ledger.acknowledged)
        load.wait_for(acknowledged + 150)  # the other gateway keeps serving, through nginx
    # Started again with the same index, its writer stores what the killed one left spooled.
    victim.process = None
    victim.start()
    ledger.verify(cluster.front)
    assert ledger.not_json == []
    # 502 (JSON, from nginx): requests that were in flight in the killed gateway.
    assert set(ledger.statuses) <= {200, 502}


def test_a_gateway_with_bad_arguments_says_what_is_wrong(cluster, tmp_path):
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "agentwharf.cli.main", "gateway", "--home", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=60)

    not_a_url = run("--control", "localhost:8080", "--port", "0")
    assert not_a_url.returncode != 0 and "--control must be the platform's base URL" in not_a_url.stdout + not_a_url.stderr
    taken = run("--control", cluster.base_url, "--port", str(cluster.gateways[1].port))
    assert taken.returncode != 0 and "in use" in taken.stdout + taken.stderr
    assert "Traceback" not in not_a_url.stderr + taken.stderr
