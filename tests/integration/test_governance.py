"""Governance as an attacker would probe it: two users and a service principal share a platform
with exactly the rights granted; models get exactly the credentials they declared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
from mlflow.models.resources import DatabricksServingEndpoint

from tests.integration.conftest import AGENTS
from tests.integration.platform_process import wait_until

BODY = {"input": [{"role": "user", "content": "hi"}]}


def _json_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["error_code"] and body["message"]
    return body


@pytest.fixture(scope="module")
def people(platform, http):
    """alice and bob (users) and ci-bot (a service principal), each with a token."""
    suffix = uuid.uuid4().hex[:6]
    tokens = {}
    for kind, key, name in (("Users", "userName", f"alice-{suffix}"), ("Users", "userName", f"bob-{suffix}"),
                            ("ServicePrincipals", "applicationId", f"ci-bot-{suffix}")):
        assert http.post(f"/api/2.0/preview/scim/v2/{kind}", json={key: name}).status_code == 200
        created = http.post("/api/2.0/token-management/on-behalf-of/tokens", json={"application_id": name, "lifetime_seconds": 3600})
        tokens[name.split("-")[0] if not name.startswith("ci") else "ci"] = (name, created.json()["token_value"])
    clients = {who: httpx.Client(base_url=platform.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"})
               for who, (_name, token) in tokens.items()}
    yield {who: {"name": name, "token": token, "http": clients[who]} for who, (name, token) in tokens.items()}
    for client in clients.values():
        client.close()


def _wait_ready(http, endpoint: str) -> None:
    wait_until(lambda: http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()["state"]["ready"] == "READY",
               timeout=120, message=f"{endpoint} to be ready")


@pytest.fixture(scope="module")
def shared(platform, http, people, logged):
    """alice may deploy everything under main.gov (a prefix grant, given before the model
    exists) and deploys main.gov.info; bob and ci-bot get nothing yet."""
    alice = people["alice"]
    granted = http.put("/api/2.0/agentwharf/model-permissions/main.gov", json={"principal": alice["name"], "permission": "USE"})
    assert granted.status_code == 200, granted.text
    model = f"main.gov.info{uuid.uuid4().hex[:6]}"
    mlflow.register_model(logged["info"], model)
    deployed = alice["http"].post("/api/2.0/agents/deployments:deploy", json={"model_name": model, "model_version": "1"})
    assert deployed.status_code == 200, deployed.text
    endpoint = deployed.json()["deployed_chain"]["endpoint_name"]
    _wait_ready(http, endpoint)
    return {"model": model, "endpoint": endpoint}


def test_every_route_answers_401_without_a_token(platform):
    """Every route of the control plane, the gateway and MLflow's server (its Flask routes
    enumerated from MLflow itself), except /healthz and the token-free Databricks discovery
    document."""
    from mlflow.server import app as mlflow_flask

    from starlette.routing import Route

    from agentwharf import databricks_compat, web
    from agentwharf.control.app import ROUTERS

    routes: set[tuple[str, str]] = set()
    for router in (*ROUTERS, *databricks_compat.ROUTERS):
        for route in router.routes:
            for method in route.methods:
                routes.add((method, route.path))
    # The pages (console, playground, review app); only signing in and its files are public.
    for route in web._routes():
        if isinstance(route, Route) and route.path not in web.PUBLIC_PATHS:
            routes |= {(method, route.path) for method in route.methods - {"HEAD"}}
    for rule in mlflow_flask.url_map.iter_rules():
        for method in rule.methods - {"OPTIONS", "HEAD"}:
            routes.add((method, rule.rule))
    routes |= {("POST", "/serving-endpoints/{name}/invocations"), ("POST", "/serving-endpoints/responses"),
               ("POST", "/serving-endpoints/chat/completions"), ("POST", "/serving-endpoints/{n}/served-models/{e}/invocations"),
               ("GET", "/metrics"), ("GET", "/"), ("GET", "/ajax-api/3.0/mlflow/traces"), ("GET", "/no/such/route")}
    assert len(routes) > 200
    leaked = []
    with httpx.Client(base_url=platform.base_url, timeout=30) as anonymous:
        for method, path in sorted(routes):
            concrete = path.replace("<path:", "<").replace("{", "<").replace("}", ">")
            while "<" in concrete:
                start, end = concrete.index("<"), concrete.index(">")
                concrete = concrete[:start] + "x" + concrete[end + 1:]
            for headers in ({}, {"Authorization": "Bearer awp_forged"}, {"Authorization": "Basic YWRtaW46cGFzc3dvcmQ="}):
                answer = anonymous.request(method, concrete, headers=headers, json={} if method in ("POST", "PUT", "PATCH") else None)
                if answer.status_code != 401 or answer.headers["content-type"] != "application/json":
                    leaked.append((method, concrete, headers, answer.status_code))
    assert leaked == []
    assert httpx.get(f"{platform.base_url}/healthz").status_code == 200
    # The first start wrote the admin's token for its owner's eyes only.
    assert (Path(platform.home) / "admin.token").stat().st_mode & 0o777 == 0o600
    assert (Path(platform.home) / "secrets" / "signing.key").stat().st_mode & 0o777 == 0o600


def test_bad_tokens_are_refused(platform, http, people):
    alice = people["alice"]
    short = http.post("/api/2.0/token-management/on-behalf-of/tokens", json={"application_id": alice["name"], "lifetime_seconds": 1}).json()
    revoked = http.post("/api/2.0/token-management/on-behalf-of/tokens", json={"application_id": alice["name"]}).json()
    with httpx.Client(base_url=platform.base_url, headers={"Authorization": f"Bearer {revoked['token_value']}"}) as client:
        assert client.get("/api/2.0/serving-endpoints").status_code == 200
        assert http.delete(f"/api/2.0/token-management/tokens/{revoked['token_info']['token_id']}").status_code == 200
        _json_error(client.get("/api/2.0/serving-endpoints"), 401)
    time.sleep(1.5)
    with httpx.Client(base_url=platform.base_url, headers={"Authorization": f"Bearer {short['token_value']}"}) as client:
        assert "expired" in _json_error(client.get("/api/2.0/serving-endpoints"), 401)["message"]
    tampered = alice["token"][:-2] + ("AA" if not alice["token"].endswith("AA") else "BB")
    _json_error(httpx.get(f"{platform.base_url}/api/2.0/serving-endpoints", headers={"Authorization": f"Bearer {tampered}"}), 401)
    # Only admins manage principals and others' tokens.
    _json_error(alice["http"].post("/api/2.0/preview/scim/v2/Users", json={"userName": "mallory"}), 403)
    _json_error(alice["http"].get("/api/2.0/token-management/tokens"), 403)


def test_deploying_a_model_you_may_not_deploy_is_403_and_creates_nothing(http, people, shared, logged):
    bob = people["bob"]
    body = _json_error(bob["http"].post("/api/2.0/agents/deployments:deploy",
                                        json={"model_name": shared["model"], "model_version": "1", "endpoint_name": "bobs-own"}), 403)
    assert shared["model"] in body["message"]
    assert http.get("/api/2.0/serving-endpoints/bobs-own").status_code == 404
    # Nor may he add a version to alice's endpoint.
    mlflow.register_model(logged["info"], shared["model"])
    _json_error(bob["http"].post("/api/2.0/agents/deployments:deploy", json={"model_name": shared["model"], "model_version": "2"}), 403)
    assert len(http.get(f"/api/2.0/serving-endpoints/{shared['endpoint']}").json()["config"]["served_entities"]) == 1
    # MLflow itself applies the same identities to the registry: the prefix grant lets alice
    # read the model; bob, with nothing, cannot.
    assert people["alice"]["http"].get("/api/2.0/mlflow/registered-models/get", params={"name": shared["model"]}).status_code == 200
    _json_error(bob["http"].get("/api/2.0/mlflow/registered-models/get", params={"name": shared["model"]}), 403)


def test_endpoint_levels_give_exactly_their_rights(platform, http, people, shared):
    alice, bob, ci = people["alice"], people["bob"], people["ci"]
    endpoint = shared["endpoint"]
    path = f"/serving-endpoints/{endpoint}/invocations"

    # Nothing granted: bob cannot see, query, or learn about it.
    assert endpoint not in [e["name"] for e in bob["http"].get("/api/2.0/serving-endpoints").json()["endpoints"]]
    _json_error(bob["http"].get(f"/api/2.0/serving-endpoints/{endpoint}"), 403)
    _json_error(bob["http"].post(path, json=BODY), 403)

    # The creator manages: alice grants bob CAN_VIEW, then CAN_QUERY; ci-bot CAN_REVIEW.
    acl = {"access_control_list": [{"user_name": bob["name"], "permission_level": "CAN_VIEW"}]}
    assert alice["http"].patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}", json=acl).status_code == 200
    assert bob["http"].get(f"/api/2.0/serving-endpoints/{endpoint}").status_code == 200
    _json_error(bob["http"].post(path, json=BODY), 403)
    acl = {"access_control_list": [{"user_name": bob["name"], "permission_level": "CAN_QUERY"},
                                   {"service_principal_name": ci["name"], "permission_level": "CAN_REVIEW"}]}
    assert alice["http"].patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}", json=acl).status_code == 200
    answer = bob["http"].post(path, json=BODY)
    assert answer.status_code == 200 and answer.json()["output"][0]["content"][0]["text"] == "Echo: hi"

    # CAN_QUERY is not enough to manage, review or re-grant; nothing changes.
    before = http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()
    _json_error(bob["http"].delete(f"/api/2.0/serving-endpoints/{endpoint}"), 403)
    _json_error(bob["http"].delete(f"/api/2.0/agents/deployments/{shared['model']}"), 403)
    _json_error(bob["http"].put(f"/api/2.0/serving-endpoints/{endpoint}/config", json=before["config"]), 403)
    _json_error(bob["http"].get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table"), 403)
    promote = {"access_control_list": [{"user_name": bob["name"], "permission_level": "CAN_MANAGE"}]}
    _json_error(bob["http"].patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}", json=promote), 403)
    after = http.get(f"/api/2.0/serving-endpoints/{endpoint}").json()
    assert after["config"] == before["config"]
    levels = {e.get("user_name") or e.get("service_principal_name") or e.get("group_name"): e["all_permissions"][0]["permission_level"]
              for e in alice["http"].get(f"/api/2.0/permissions/serving-endpoints/{endpoint}").json()["access_control_list"]}
    assert levels == {alice["name"]: "CAN_MANAGE", bob["name"]: "CAN_QUERY", ci["name"]: "CAN_REVIEW", "admins": "CAN_MANAGE"}

    # Traces live in MLflow, which enforces the same grants: the reviewer reads them, the
    # querier does not.
    experiment = before["experiment_id"]
    search = {"locations": [{"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment}}], "max_results": 5}
    _json_error(bob["http"].post("/api/3.0/mlflow/traces/search", json=search), 403)
    found = wait_until(lambda: (r := ci["http"].post("/api/3.0/mlflow/traces/search", json=search)).status_code == 200
                       and r.json().get("traces") and r, timeout=30, message="the reviewer to see traces")
    # Each trace names who called (the first query above was bob's).
    wait_until(lambda: bob["name"] in {t["trace_metadata"].get("agentwharf.caller")
                                       for t in ci["http"].post("/api/3.0/mlflow/traces/search", json=search).json()["traces"]},
               timeout=30, message="bob's call to be traced under his name")
    assert found.json()["traces"]
    # Reviewers give feedback on a trace; a querier may not.
    trace_id = found.json()["traces"][0]["trace_id"]
    feedback = {"assessment": {"assessment_name": "helpful", "trace_id": trace_id, "feedback": {"value": True},
                               "source": {"source_type": "HUMAN", "source_id": ci["name"]}}}
    given = ci["http"].post(f"/api/3.0/mlflow/traces/{trace_id}/assessments", json=feedback)
    assert given.status_code == 200, given.text
    _json_error(bob["http"].post(f"/api/3.0/mlflow/traces/{trace_id}/assessments", json=feedback), 403)
    table = ci["http"].get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table")
    assert table.status_code == 200
    assert bob["name"] in {row["caller"] for row in table.json()["rows"]}

    # NO_PERMISSIONS removes a grant.
    revoke = {"access_control_list": [{"user_name": bob["name"], "permission_level": "NO_PERMISSIONS"}]}
    assert alice["http"].patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}", json=revoke).status_code == 200
    _json_error(bob["http"].post(path, json=BODY), 403)


def _log_relay(model: str, *, endpoints: list[str], scopes: list[str] | None) -> None:
    mlflow.set_experiment("/tests/governance")
    policy = AuthPolicy(system_auth_policy=SystemAuthPolicy(resources=[DatabricksServingEndpoint(endpoint_name=e) for e in endpoints]),
                        user_auth_policy=UserAuthPolicy(api_scopes=scopes) if scopes is not None else None)
    with mlflow.start_run():
        uri = mlflow.pyfunc.log_model(name="relay", python_model=str(AGENTS / "relay_agent.py"), auth_policy=policy,
                                      pip_requirements=["mlflow", "httpx"]).model_uri
    mlflow.register_model(uri, model)


@pytest.fixture(scope="module")
def relays(http, people, shared, logged):
    """``target`` (the info agent), ``other`` (another info agent) and the relay agents, all
    deployed by the admin: ``relay`` declares target plus the serving scope, ``genie`` only a
    scope that means nothing here, ``plain`` declares nothing."""
    suffix = uuid.uuid4().hex[:6]
    names = {}
    for key in ("target", "other"):
        model = f"main.relay.{key}{suffix}"
        mlflow.register_model(logged["info"], model)
        names[key] = http.post("/api/2.0/agents/deployments:deploy", json={"model_name": model, "model_version": "1"}).json()["deployed_chain"]["endpoint_name"]
    for key, endpoints, scopes in (("relay", [names["target"]], ["serving.serving-endpoints"]),
                                   ("genie", [], ["dashboards.genie"]), ("plain", [], None)):
        model = f"main.relay.{key}{suffix}"
        _log_relay(model, endpoints=endpoints, scopes=scopes)
        names[key] = http.post("/api/2.0/agents/deployments:deploy", json={"model_name": model, "model_version": "1"}).json()["deployed_chain"]["endpoint_name"]
    for endpoint in names.values():
        _wait_ready(http, endpoint)
    bob = people["bob"]["name"]
    for key in ("relay", "genie", "plain"):
        http.patch(f"/api/2.0/permissions/serving-endpoints/{names[key]}",
                   json={"access_control_list": [{"user_name": bob, "permission_level": "CAN_QUERY"}]})
    return names


def _relay(client, endpoint: str, **custom) -> dict:
    answer = client.post(f"/serving-endpoints/{endpoint}/invocations", json={**BODY, "custom_inputs": custom})
    assert answer.status_code == 200, answer.text
    return answer.json()["custom_outputs"]


def test_system_credential_reaches_exactly_the_declared_endpoints(http, relays):
    out = _relay(http, relays["relay"], via="system", target=relays["target"], echo_token=True)
    assert out["status"] == 200 and "Echo: relayed" in out["body"]
    assert out["mlflow_token_in_env"] is False
    system_token = out["token"]
    assert _relay(http, relays["relay"], via="system", target=relays["other"])["status"] == 403
    assert _relay(http, relays["relay"], via="system", target="/api/2.0/serving-endpoints")["status"] == 403
    assert _relay(http, relays["relay"], via="system", target="/api/2.0/mlflow/experiments/search?max_results=1")["status"] == 403
    with httpx.Client(base_url=http.base_url, headers={"Authorization": f"Bearer {system_token}"}) as stolen:
        _json_error(stolen.delete(f"/api/2.0/serving-endpoints/{relays['target']}"), 403)
        _json_error(stolen.post(f"/serving-endpoints/{relays['other']}/invocations", json=BODY), 403)
        assert stolen.post(f"/serving-endpoints/{relays['target']}/invocations", json=BODY).status_code == 200
    # A model that declares nothing gets no credential at all.
    plain = _relay(http, relays["plain"], via="system", target=relays["target"])
    assert "no system credential" in plain["error"] and plain["databricks_token_in_env"] is False


def test_on_behalf_of_token_is_the_callers_and_no_more(platform, http, people, relays):
    bob = people["bob"]
    # bob may query the relay but not its target: on his behalf, the relay cannot either.
    out = _relay(bob["http"], relays["relay"], via="user", target=relays["target"], echo_token=True)
    assert out["user_credentials_at_load"] is False
    assert out["status"] == 403
    obo = out["token"]
    http.patch(f"/api/2.0/permissions/serving-endpoints/{relays['target']}",
               json={"access_control_list": [{"user_name": bob["name"], "permission_level": "CAN_QUERY"}]})
    assert _relay(bob["http"], relays["relay"], via="user", target=relays["target"])["status"] == 200
    # The token only queries endpoints: no control routes, no MLflow.
    with httpx.Client(base_url=platform.base_url, headers={"Authorization": f"Bearer {obo}"}) as replay:
        assert replay.post(f"/serving-endpoints/{relays['target']}/invocations", json=BODY).status_code == 200
        _json_error(replay.get("/api/2.0/serving-endpoints"), 403)
        _json_error(replay.post("/api/2.0/mlflow/experiments/search", json={"max_results": 1}), 403)
        _json_error(replay.post(f"/serving-endpoints/{relays['other']}/invocations", json=BODY), 403)
        # Useless after expiry (the session platform's OBO lifetime is 3 s).
        time.sleep(3.5)
        assert "expired" in _json_error(replay.post(f"/serving-endpoints/{relays['target']}/invocations", json=BODY), 401)["message"]
    # A model whose scopes do not include serving endpoints gets a token that cannot query, and
    # the platform says so in its log when it deploys it.
    assert _relay(bob["http"], relays["genie"], via="user", target=relays["target"])["status"] == 403
    assert "['dashboards.genie'], which name services agentwharf does not run" in (Path(platform.home) / "logs" / "platform.log").read_text()
    # A model without a UserAuthPolicy gets no user token.
    assert "on-behalf-of" in _relay(bob["http"], relays["plain"], via="user", target=relays["target"])["error"]


def test_agents_set_permissions_shares_every_endpoint_of_a_model(platform, people, shared, monkeypatch):
    from agentwharf import agents
    from agentwharf.errors import AgentwharfError

    ci = people["ci"]
    monkeypatch.setenv("AGENTWHARF_TOKEN", people["alice"]["token"])
    agents.set_permissions(shared["model"], [ci["name"]], agents.PermissionLevel.CAN_QUERY)
    assert agents.get_permissions(shared["model"])[shared["endpoint"]][ci["name"]] is agents.PermissionLevel.CAN_QUERY
    assert ci["http"].post(f"/serving-endpoints/{shared['endpoint']}/invocations", json=BODY).status_code == 200
    agents.set_permissions(shared["model"], [ci["name"]], agents.PermissionLevel.NO_PERMISSIONS)
    assert ci["name"] not in agents.get_permissions(shared["model"])[shared["endpoint"]]
    _json_error(ci["http"].post(f"/serving-endpoints/{shared['endpoint']}/invocations", json=BODY), 403)
    # Someone without CAN_MANAGE cannot share it.
    monkeypatch.setenv("AGENTWHARF_TOKEN", people["bob"]["token"])
    with pytest.raises(AgentwharfError) as refused:
        agents.set_permissions(shared["model"], [people["bob"]["name"]], "CAN_MANAGE")
    assert refused.value.error_code in ("PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST")


def test_cli_manages_people_tokens_and_grants(platform, shared, tmp_path):
    admin_env = {**os.environ, **platform.client_env(), "COLUMNS": "250"}

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "agentwharf.cli.main", *args], capture_output=True, text=True,
                              env=env or admin_env, timeout=120, cwd=tmp_path)
        assert "Traceback" not in done.stdout + done.stderr
        return done

    carol = f"carol-{uuid.uuid4().hex[:6]}"
    assert run("users", "create", carol).returncode == 0
    again = run("users", "create", carol)
    assert again.returncode != 0 and "already exists" in again.stdout + again.stderr
    assert carol in run("users", "list").stdout
    assert run("service-principals", "create", f"svc-{carol}").returncode == 0
    assert f"svc-{carol}" in run("service-principals", "list").stdout
    created = run("tokens", "create", "--for", carol, "--lifetime-seconds", "600", "--comment", "cli test")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("awp_")
    carol_env = {**admin_env, "AGENTWHARF_TOKEN": token}
    mine = run("tokens", "list", env=carol_env)
    assert mine.returncode == 0 and "cli test" in mine.stdout
    refused = run("users", "create", "mallory", env=carol_env)
    assert refused.returncode != 0 and "Only an admin" in refused.stdout + refused.stderr

    assert run("permissions", "grant", shared["endpoint"], carol, "CAN_QUERY").returncode == 0
    listed = run("permissions", "list", shared["endpoint"])
    assert carol in listed.stdout and "CAN_QUERY" in listed.stdout
    bad = run("permissions", "grant", shared["endpoint"], carol, "CAN_FLY")
    assert bad.returncode != 0 and "CAN_FLY" in bad.stdout + bad.stderr and "CAN_QUERY" in bad.stdout + bad.stderr
    assert run("permissions", "grant", "main.cli", carol, "USE", "--model").returncode == 0
    assert "USE" in run("permissions", "list", "main.cli", "--model").stdout

    # Groups: create one with carol in it, grant it the endpoint, see the grant listed as a group's.
    team = f"team-{carol}"

    def members() -> list[str]:
        line = next(line for line in run("groups", "list").stdout.splitlines() if team in line)
        return sorted(m.strip() for m in line.split("\t")[2].split(",") if m.strip())

    assert run("groups", "create", team, "--member", carol).returncode == 0
    assert members() == [carol]
    assert run("groups", "add-member", team, f"svc-{carol}").returncode == 0
    assert run("permissions", "grant", shared["endpoint"], team, "CAN_VIEW", "--group").returncode == 0
    grants = run("permissions", "list", shared["endpoint"]).stdout
    assert f"{team} (group)" in grants and "admins (group)" in grants
    assert members() == [carol, f"svc-{carol}"]
    assert run("groups", "remove-member", team, carol).returncode == 0
    assert members() == [f"svc-{carol}"]
    # Deactivated, carol's token stops at once; activated, it works again.
    assert run("users", "deactivate", carol).returncode == 0
    assert run("tokens", "list", env=carol_env).returncode != 0
    assert run("users", "activate", carol).returncode == 0
    assert run("tokens", "list", env=carol_env).returncode == 0
    assert run("groups", "delete", team, "--yes").returncode == 0

    listed_tokens = json.loads(run("tokens", "list", "--all", "--json").stdout)
    token_id = next(t["token_id"] for t in listed_tokens if t["comment"] == "cli test")
    assert run("tokens", "revoke", token_id, "--any").returncode == 0
    revoked = run("tokens", "list", env=carol_env)
    assert revoked.returncode != 0 and "revoked" in revoked.stdout + revoked.stderr
    # No token at all: the client also falls back to MLFLOW_TRACKING_TOKEN and DATABRICKS_TOKEN.
    anonymous = {k: v for k, v in admin_env.items() if k not in ("AGENTWHARF_TOKEN", "MLFLOW_TRACKING_TOKEN", "DATABRICKS_TOKEN")}
    nobody = run("endpoints", "list", env=anonymous)
    assert nobody.returncode != 0 and "Authentication required" in nobody.stdout + nobody.stderr
    assert run("users", "delete", carol, "--yes").returncode == 0
    assert carol not in run("users", "list").stdout


def test_a_group_grant_on_models_reaches_its_members_in_agentwharf_and_in_mlflow(platform, http, people, logged):
    """A prefix grant to a group: a member may deploy (agentwharf decides) and read the model
    (MLflow decides, through the group's role); leaving the group takes both away."""
    bob = people["bob"]
    suffix = uuid.uuid4().hex[:6]
    group = http.post("/api/2.0/preview/scim/v2/Groups", json={"displayName": f"deployers {suffix}"}).json()
    prefix, model = f"main.grp{suffix}", f"main.grp{suffix}.info"
    granted = http.put(f"/api/2.0/agentwharf/model-permissions/{prefix}", json={"principal": group["displayName"], "permission": "USE"})
    assert granted.status_code == 200 and granted.json()["grants"] == [{"principal": group["displayName"], "permission": "USE"}]
    mlflow.register_model(logged["info"], model)
    deploy = {"model_name": model, "model_version": "1", "endpoint_name": f"grp-{suffix}"}
    read = ("/api/2.0/mlflow/registered-models/get", {"name": model})
    _json_error(bob["http"].post("/api/2.0/agents/deployments:deploy", json=deploy), 403)
    _json_error(bob["http"].get(read[0], params=read[1]), 403)

    bob_id = http.get("/api/2.0/preview/scim/v2/Users", params={"filter": f'userName eq "{bob["name"]}"'}).json()["Resources"][0]["id"]
    member = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
              "Operations": [{"op": "add", "path": "members", "value": [{"value": bob_id}]}]}
    assert http.patch(f"/api/2.0/preview/scim/v2/Groups/{group['id']}", json=member).status_code == 200
    assert bob["http"].get(read[0], params=read[1]).status_code == 200
    deployed = bob["http"].post("/api/2.0/agents/deployments:deploy", json=deploy)
    assert deployed.status_code == 200, deployed.text
    model_grants = http.get(f"/api/2.0/agentwharf/model-permissions/{model}").json()["grants"]
    assert {"principal": group["displayName"], "permission": "USE"} in model_grants

    leave = {"Operations": [{"op": "remove", "path": f'members[value eq "{bob_id}"]'}]}
    assert http.patch(f"/api/2.0/preview/scim/v2/Groups/{group['id']}", json=leave).status_code == 200
    _json_error(bob["http"].get(read[0], params=read[1]), 403)
    mlflow.register_model(logged["info"], model)
    _json_error(bob["http"].post("/api/2.0/agents/deployments:deploy",
                                 json={**deploy, "model_version": "2", "endpoint_name": f"grp2-{suffix}"}), 403)
    assert http.delete(f"/api/2.0/serving-endpoints/grp-{suffix}").status_code == 200


def test_no_token_is_stored_anywhere(platform, http, people, relays):
    """After the tests above: grep the store, spool, logs and MLflow's traces for every token
    they used (personal, system, on-behalf-of)."""
    out = _relay(http, relays["relay"], via="system", target=relays["target"], echo_token=True)
    obo = _relay(people["bob"]["http"], relays["relay"], via="user", target=relays["target"], echo_token=True)["token"]
    secrets = [platform.token, out["token"], obo, *(p["token"] for p in people.values())]
    time.sleep(2)  # the writer stores within a second
    leaks = []
    for path in Path(platform.home).rglob("*"):
        if path.is_file() and path.name != "admin.token":
            data = path.read_bytes()
            leaks += [(str(path), s[:8]) for s in secrets if s.encode() in data]
    log_files = list(Path(platform.home).parent.glob("*-platform.out"))
    for path in log_files:
        data = path.read_bytes()
        leaks += [(str(path), s[:8]) for s in secrets if s.encode() in data]
    assert leaks == []
    experiment = http.get(f"/api/2.0/serving-endpoints/{relays['relay']}").json()["experiment_id"]
    traces = mlflow.search_traces(locations=[experiment], return_type="list", max_results=50)
    assert traces
    dumped = "".join(t.to_json() for t in traces)
    assert "[REDACTED]" in dumped
    assert not any(s in dumped for s in secrets)


def test_a_system_credential_dies_with_its_deployment(http, relays):
    """Deleting an endpoint and deploying the same model again under the same names mints a new
    credential; the old one, if it leaked, opens nothing."""
    model = f"main.relay.again{uuid.uuid4().hex[:6]}"
    _log_relay(model, endpoints=[relays["target"]], scopes=None)
    endpoint = http.post("/api/2.0/agents/deployments:deploy", json={"model_name": model, "model_version": "1"}).json()["deployed_chain"]["endpoint_name"]
    _wait_ready(http, endpoint)
    old = _relay(http, endpoint, via="system", target=relays["target"], echo_token=True)["token"]
    call = lambda token: httpx.post(f"{http.base_url}/serving-endpoints/{relays['target']}/invocations", json=BODY,  # noqa: E731
                                    headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert call(old).status_code == 200
    assert http.delete(f"/api/2.0/serving-endpoints/{endpoint}").status_code == 200
    assert "no longer served" in _json_error(call(old), 401)["message"]
    http.post("/api/2.0/agents/deployments:deploy", json={"model_name": model, "model_version": "1"})
    _wait_ready(http, endpoint)
    new = _relay(http, endpoint, via="system", target=relays["target"], echo_token=True)["token"]
    assert new != old and call(new).status_code == 200
    _json_error(call(old), 401)


def test_the_on_behalf_of_example_answers_with_the_callers_rights(platform, http, people, relays):
    """examples/on_behalf_of, logged and deployed by its own script, asks the helper endpoint
    as the calling user: refused while alice may not query the helper, answered once she may."""
    model = f"main.examples.obo{uuid.uuid4().hex[:6]}"
    script = Path(__file__).resolve().parents[2] / "examples" / "on_behalf_of" / "log_and_deploy.py"
    done = subprocess.run([sys.executable, str(script), "--helper", relays["target"], "--name", model],
                          capture_output=True, text=True, env={**os.environ, **platform.client_env()}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    endpoint = "agents_" + model.replace(".", "-")
    alice = people["alice"]
    http.patch(f"/api/2.0/permissions/serving-endpoints/{endpoint}",
               json={"access_control_list": [{"user_name": alice["name"], "permission_level": "CAN_QUERY"}]})

    def ask() -> dict:
        answer = alice["http"].post(f"/serving-endpoints/{endpoint}/invocations", json=BODY)
        assert answer.status_code == 200, answer.text
        return answer.json()

    refused = ask()
    assert refused["custom_outputs"] == {"helper_status_as_user": 403, "helper_status_as_agent": 200}
    assert "refused the request on your behalf" in refused["output"][0]["content"][0]["text"]
    http.patch(f"/api/2.0/permissions/serving-endpoints/{relays['target']}",
               json={"access_control_list": [{"user_name": alice["name"], "permission_level": "CAN_QUERY"}]})
    answered = ask()
    assert answered["output"][0]["content"][0]["text"] == "Echo: hi"
    assert answered["custom_outputs"]["helper_status_as_user"] == 200
