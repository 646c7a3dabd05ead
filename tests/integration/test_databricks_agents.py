"""The guide's step 7 as written for Databricks, run unchanged against agentwharf (issue 6):
``MLFLOW_TRACKING_URI=databricks``, the ``databricks-uc`` registry and ``from databricks import
agents``, pointed at the platform by DATABRICKS_HOST and DATABRICKS_TOKEN only.

databricks-agents 1.13.0, databricks-sdk 0.156.0 and mlflow 3.17.2 run in a venv of their own
(.venv-databricks-agents, no agentwharf in it) built from databricks/agents-constraints.txt,
which pins everything they pull in. The facade routes are also called directly, so a change in
their shapes (shared/reference/databricks-clients.md) fails here even if a client tolerates it.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest
from google.protobuf.json_format import ParseDict
from mlflow.protos import databricks_uc_registry_messages_pb2 as uc

from tests.integration.client_venvs import client_venv
from tests.integration.platform_process import wait_until

pytestmark = pytest.mark.timeout(900)

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent / "databricks"
PACKAGES = ["databricks-agents==1.13.0", "databricks-sdk==0.156.0", "mlflow==3.17.2"]
CONSTRAINTS = HERE / "agents-constraints.txt"
MODEL = "main.default.echo"
ENDPOINT = "agents_main-default-echo"
DIRECTORY_ENTRY_FIELDS = {"path", "name", "is_directory", "file_size", "last_modified"}
#: How agents_step7.py --phases starts the line with a phase's result.
PHASE_RESULT = "PHASE RESULT "


@pytest.fixture(scope="module")
def agents_python() -> Path:
    return client_venv(".venv-databricks-agents", PACKAGES, CONSTRAINTS)


@pytest.fixture(scope="module")
def guide(platform, agents_python, tmp_path_factory):
    """Runs phases of agents_step7.py in a folder holding the guide's agent.py, with only the
    variables a Databricks user sets (and a HOME without ~/.databrickscfg): one Python for the
    module, as a notebook's cells share one (each phase in a process of its own imported
    databricks-agents and MLflow again, most of its time)."""
    folder = tmp_path_factory.mktemp("guide")
    shutil.copy(ROOT / "examples" / "echo" / "agent.py", folder / "agent.py")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder),
           "DATABRICKS_HOST": platform.base_url, "DATABRICKS_TOKEN": platform.token, "MLFLOW_TRACKING_URI": "databricks"}
    stderr = open(folder / "phases.err", "w+")
    process = subprocess.Popen([str(agents_python), str(HERE / "agents_step7.py"), "--phases"], cwd=folder, env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout] + [lines.put(None)], daemon=True).start()

    def run(*phase: str) -> dict:
        process.stdin.write(" ".join(phase) + "\n")
        process.stdin.flush()
        printed = []
        while True:
            try:
                line = lines.get(timeout=600)
            except queue.Empty:
                raise AssertionError(f"phase {phase} gave no result within 600 s") from None
            assert line is not None, "".join(printed)[-3000:] + (folder / "phases.err").read_text()[-6000:]
            if line.startswith(PHASE_RESULT):
                seen = json.loads(line[len(PHASE_RESULT):])
                assert "phase_failed" not in seen, "".join(printed)[-3000:] + seen["phase_failed"][-6000:]
                return seen
            printed.append(line)

    try:
        yield run
    finally:
        process.stdin.close()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr.close()


def _ready(http: httpx.Client, name: str) -> dict | None:
    endpoint = http.get(f"/api/2.0/serving-endpoints/{name}").json()
    state = endpoint.get("state", {})
    return endpoint if (state.get("ready"), state.get("config_update")) == ("READY", "NOT_UPDATING") else None


@pytest.fixture(scope="module")
def alice(http) -> str:
    created = http.post("/api/2.0/preview/scim/v2/Users", json={"userName": "alice"})
    assert created.status_code in (200, 409), created.text
    return "alice"


@pytest.fixture(scope="module")
def deployed(guide, http) -> dict:
    """The guide's step 7 up to ``print(deployment.query_endpoint)``, then until it answers
    (``agents.deploy`` returns before the endpoint is ready, as on Databricks)."""
    seen = guide("deploy")
    seen["endpoint"] = wait_until(lambda: _ready(http, ENDPOINT), timeout=300, message="the deployed endpoint to be ready")
    return seen


def test_step7_logs_registers_deploys_and_the_endpoint_answers(platform, deployed, http):
    version = str(deployed["version"])
    entity = f"main-default-echo_{version}"
    assert deployed["deployment"] == {
        "model_name": MODEL, "model_version": version, "endpoint_name": ENDPOINT, "served_entity_name": entity,
        "query_endpoint": f"{platform.base_url}/serving-endpoints/{ENDPOINT}/served-models/{entity}/invocations",
        "endpoint_url": f"{platform.base_url}/ml/endpoints/{ENDPOINT}/",
        "review_app_url": f"{platform.base_url}/ml/review-v2/chat?endpoint={ENDPOINT}",
    }
    # MLflow stores its own URIs; the Databricks client sees the dbfs:/databricks/mlflow-tracking form.
    experiment = deployed["experiment_id"]
    assert deployed["experiment_artifact_location"] == f"dbfs:/databricks/mlflow-tracking/{experiment}"
    assert deployed["run_artifact_uri"] == f"dbfs:/databricks/mlflow-tracking/{experiment}/{deployed['run_id']}/artifacts"
    assert {"MLmodel", "agent.py", "python_env.yaml"} <= set(deployed["model_files"])
    # The endpoint is agentwharf's own: the entity serves the registered version...
    [served] = deployed["endpoint"]["config"]["served_entities"]
    assert (served["name"], served["entity_name"], served["entity_version"]) == (entity, MODEL, version)
    assert served["environment_vars"]["ENABLE_MLFLOW_TRACING"] == "true"
    # ...and answers on both routes.
    for url in (deployed["deployment"]["query_endpoint"], f"/serving-endpoints/{ENDPOINT}/invocations"):
        answer = http.post(url, json={"input": [{"role": "user", "content": "from databricks.agents"}]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["output"][0]["content"][0]["text"] == "Echo: from databricks.agents"


def test_the_version_is_mlflows_registered_model_and_its_creator_manages_it(deployed, http):
    version = str(deployed["version"])
    mv = mlflow.MlflowClient().get_model_version(MODEL, version)
    # MLflow keeps the logged model as the version's source (its registry stores no model_id).
    assert (mv.name, mv.version, mv.run_id, mv.source) == (MODEL, version, deployed["run_id"], deployed["model_uri"])
    assert deployed["model_uri"] == f"models:/{deployed['model_id']}"
    grants = http.get(f"/api/2.0/agentwharf/model-permissions/{MODEL}").json()["grants"]
    assert {"principal": "admin", "permission": "MANAGE"} in grants
    # MLflow's own client still sees MLflow's URIs.
    experiment = http.get("/api/2.0/mlflow/experiments/get", params={"experiment_id": deployed["experiment_id"]}).json()
    assert experiment["experiment"]["artifact_location"].startswith("mlflow-artifacts:/")


def test_traces_of_its_requests_land_in_the_endpoints_experiment(deployed, http):
    experiment = deployed["endpoint"]["experiment_id"]
    request_id = f"dbx-agents-{uuid.uuid4().hex[:8]}"
    answer = http.post(deployed["deployment"]["query_endpoint"], headers={"x-request-id": request_id},
                       json={"input": [{"role": "user", "content": "traced"}]})
    assert answer.status_code == 200

    def find():
        traces = mlflow.search_traces(locations=[experiment], return_type="list", max_results=500)
        return [t for t in traces if t.info.trace_metadata.get("agentwharf.client_request_id") == request_id]

    [trace] = wait_until(find, timeout=60, message="the request's trace in the endpoint's experiment")
    assert trace.info.trace_metadata["agentwharf.endpoint"] == ENDPOINT


def test_agentwharf_agents_sees_the_same_deployment(deployed):
    from agentwharf import agents

    mine = agents.get_deployments(MODEL)
    assert [(d.endpoint_name, d.served_entity_name, d.query_endpoint) for d in mine] == [
        (ENDPOINT, deployed["deployment"]["served_entity_name"], deployed["deployment"]["query_endpoint"])]
    assert MODEL in {d.model_name for d in agents.list_deployments()}


def test_set_and_get_permissions_are_the_endpoints_permissions(deployed, guide, http, alice):
    seen = guide("permissions")
    assert seen["got"] == [deployed["deployment"]]
    assert deployed["deployment"] in seen["listed"]
    # "admins" manage every endpoint: an entry inherited from the root, as on Databricks.
    assert seen["levels"] == {"admin": "CAN_MANAGE", "admins": "CAN_MANAGE", alice: "CAN_QUERY"}
    acl = http.get(f"/api/2.0/permissions/serving-endpoints/{ENDPOINT}").json()["access_control_list"]
    assert {"user_name": alice, "all_permissions": [{"permission_level": "CAN_QUERY", "inherited": False}]} in acl
    assert {"group_name": "admins", "all_permissions": [{"permission_level": "CAN_MANAGE", "inherited": True,
                                                         "inherited_from_object": ["/serving-endpoints/"]}]} in acl

    assert guide("revoke")["levels"] == {"admin": "CAN_MANAGE", "admins": "CAN_MANAGE"}
    acl = http.get(f"/api/2.0/permissions/serving-endpoints/{ENDPOINT}").json()["access_control_list"]
    assert alice not in {entry.get("user_name") for entry in acl}
    # Putting the list back (how it revokes) stored nothing for admins beyond what they inherit.
    assert [e for e in acl if e.get("group_name") == "admins"][0]["all_permissions"][0]["inherited"] is True


def test_set_permissions_with_a_group_name_grants_the_group(deployed, guide, http, alice, platform):
    """databricks-agents sends names without "@" as groups: now they are, and its members query."""
    created = http.post("/api/2.0/preview/scim/v2/Groups", json={"displayName": "reviewers", "members": [{"display": alice}]})
    assert created.status_code == 200, created.text
    token = http.post("/api/2.0/token-management/on-behalf-of/tokens", json={"application_id": alice}).json()["token_value"]
    ask = {"input": [{"role": "user", "content": "as a reviewer"}]}
    as_alice = {"Authorization": f"Bearer {token}"}
    path = f"{platform.base_url}/serving-endpoints/{ENDPOINT}/invocations"
    assert httpx.post(path, json=ask, headers=as_alice, timeout=60).status_code == 403
    assert guide("group", "reviewers")["levels"] == {"admin": "CAN_MANAGE", "admins": "CAN_MANAGE", "reviewers": "CAN_QUERY"}
    acl = http.get(f"/api/2.0/permissions/serving-endpoints/{ENDPOINT}").json()["access_control_list"]
    assert {"group_name": "reviewers", "all_permissions": [{"permission_level": "CAN_QUERY", "inherited": False}]} in acl
    assert httpx.post(path, json=ask, headers=as_alice, timeout=60).status_code == 200
    assert guide("group", "reviewers", "NO_PERMISSIONS")["levels"] == {"admin": "CAN_MANAGE", "admins": "CAN_MANAGE"}
    assert httpx.post(path, json=ask, headers=as_alice, timeout=60).status_code == 403
    # A name that is neither a group nor a user or service principal is refused, by name.
    refused = http.patch(f"/api/2.0/permissions/serving-endpoints/{ENDPOINT}",
                         json={"access_control_list": [{"group_name": "nobody-here", "permission_level": "CAN_QUERY"}]})
    assert refused.status_code == 404 and "nobody-here" in refused.json()["message"]


def test_registry_facade_shapes(deployed, http):
    version = str(deployed["version"])
    uc_path = "/api/2.0/mlflow/unity-catalog"
    assert http.get(f"{uc_path}/registered-models:is-databricks-sdk-models-artifact-repository-enabled").json() == {
        "is_databricks_sdk_models_artifact_repository_enabled": True}
    assert http.post(f"{uc_path}/model-versions/emit-lineage", json={"name": MODEL, "version": version}).json() == {}
    model = http.get(f"{uc_path}/registered-models/get", params={"name": MODEL}).json()
    assert ParseDict(model, uc.GetRegisteredModelResponse()).registered_model.name == MODEL
    mv = http.get(f"{uc_path}/model-versions/get", params={"name": MODEL, "version": version}).json()
    parsed = ParseDict(mv, uc.GetModelVersionResponse()).model_version  # strict: no field UC lacks
    assert (parsed.version, uc.ModelVersionStatus.Name(parsed.status)) == (version, "READY")
    found = http.get(f"{uc_path}/model-versions/search", params={"filter": f"name='{MODEL}'"}).json()
    ParseDict(found, uc.SearchModelVersionsResponse())
    assert [v["version"] for v in found["model_versions"]] == [version]
    uri = http.get(f"{uc_path}/model-versions/get-download-uri", params={"name": MODEL, "version": version}).json()
    assert uri["artifact_uri"].startswith(f"dbfs:/databricks/mlflow-tracking/{deployed['experiment_id']}/logged_models/")
    bad = http.post(f"{uc_path}/registered-models/create", json={"name": "no_schema"})
    assert (bad.status_code, bad.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")
    assert "specify all three levels" in bad.json()["message"]


def test_files_api_shapes(deployed, http):
    base = f"/Models/main/default/echo/{deployed['version']}"
    listing = http.get(f"/api/2.0/fs/directories{base}")
    assert listing.status_code == 200
    entries = {e["name"]: e for e in listing.json()["contents"]}
    assert all(set(e) <= DIRECTORY_ENTRY_FIELDS and {"path", "name", "is_directory"} <= set(e) for e in entries.values())
    assert entries["MLmodel"]["path"] == f"{base}/MLmodel" and entries["MLmodel"]["is_directory"] is False
    mlmodel = http.get(f"/api/2.0/fs/files{base}/MLmodel")
    assert mlmodel.status_code == 200 and b"flavors" in mlmodel.content
    assert mlmodel.headers["content-type"] == "application/octet-stream"
    head = http.head(f"/api/2.0/fs/files{base}/MLmodel")
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(mlmodel.content) == entries["MLmodel"]["file_size"]
    assert http.head(f"/api/2.0/fs/directories{base}").status_code == 200
    assert http.head("/api/2.0/fs/directories/Models/main/default/echo/999").status_code == 404
    missing = http.get(f"/api/2.0/fs/directories{base}/nothing-here")
    assert (missing.status_code, missing.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    presign = http.post("/api/2.0/fs/create-download-url", json={"path": f"{base}/MLmodel"})
    assert presign.status_code == 404 and presign.json()["error_code"]
    # Run artifacts, where MLFLOW_TRACKING_URI=databricks logs them.
    run_files = f"/WorkspaceInternal/Mlflow/Artifacts/{deployed['experiment_id']}/Runs/{deployed['run_id']}/artifacts"
    put = http.put(f"/api/2.0/fs/files{run_files}/notes/hello.txt", content=b"hello", headers={"content-type": "application/octet-stream"})
    assert put.status_code == 204, put.text
    assert http.get(f"/api/2.0/fs/files{run_files}/notes/hello.txt").content == b"hello"
    assert [f.path for f in mlflow.MlflowClient().list_artifacts(deployed["run_id"], "notes")] == ["notes/hello.txt"]
    again = http.put(f"/api/2.0/fs/files{run_files}/notes/hello.txt", params={"overwrite": "false"}, content=b"x")
    assert (again.status_code, again.json()["error_code"]) == (409, "RESOURCE_ALREADY_EXISTS")
    # Uploads of 50 MB and more start as multipart: a session, then no part URLs (one PUT instead).
    initiated = http.post(f"/api/2.0/fs/files{run_files}/big.bin", params={"action": "initiate-upload"})
    assert initiated.json() == {"multipart_upload": {"session_token": "agentwharf-single-put"}}
    parts = http.post("/api/2.0/fs/create-upload-part-urls", json={})
    assert (parts.status_code, parts.json()["error_code"]) == (501, "NOT_IMPLEMENTED")
    outside = http.get(f"/api/2.0/fs/files{base}/%2E%2E/%2E%2E/x")
    assert (outside.status_code, outside.json()["error_code"]) == (400, "INVALID_PARAMETER_VALUE")


def test_deploy_time_records_and_probes(deployed, http):
    version = str(deployed["version"])
    body = {"model_name": MODEL, "model_version": version, "endpoint_name": ENDPOINT,
            "served_entity_name": deployed["deployment"]["served_entity_name"],
            "query_endpoint": deployed["deployment"]["query_endpoint"], "workspace_url": "ignored"}
    chain = http.post("/api/2.0/agents/deployments", json=body).json()["deployed_chain"]
    assert "/review-v2/" in chain["review_app_url"] and chain["model_version"] == version
    assert chain["query_endpoint"] == deployed["deployment"]["query_endpoint"]
    unknown = http.post("/api/2.0/agents/deployments", json={**body, "model_version": "99"})
    assert (unknown.status_code, unknown.json()["error_code"]) == (404, "RESOURCE_DOES_NOT_EXIST")
    assert http.get(f"/api/2.0/agents/deployments/{MODEL}/artifacts").json() == {"artifacts": []}
    assert http.get("/api/2.1/unity-catalog/tables/main.default.echo_payload/exists").json() == {"table_exists": False}
    monitor = http.get(f"/api/2.0/managed-evals/monitors/{ENDPOINT}")
    assert monitor.status_code == 404 and monitor.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"

    tags = f"/api/2.0/serving-endpoints/{ENDPOINT}/tags"
    assert http.patch(tags, json={"add_tags": [{"key": "team", "value": "a"}]}).json() == {"tags": [{"key": "team", "value": "a"}]}
    # One request may delete and re-add a key: deletes apply first.
    replaced = http.patch(tags, json={"add_tags": [{"key": "team", "value": "b"}], "delete_tags": ["team"]}).json()
    assert replaced == {"tags": [{"key": "team", "value": "b"}]}
    assert http.patch(tags, json={"delete_tags": ["team"]}).json() == {"tags": []}
    described = http.patch(f"/api/2.0/serving-endpoints/{ENDPOINT}/description", json={"name": ENDPOINT, "description": "echo"})
    assert described.json() == {"name": ENDPOINT, "description": "echo"}
    assert http.get(f"/api/2.0/serving-endpoints/{ENDPOINT}").json()["description"] == "echo"


@pytest.mark.parametrize("method, path, body, feature", [
    ("GET", "/api/2.1/unity-catalog/tables/main.default.t", None, "Unity Catalog"),
    ("GET", "/api/2.1/unity-catalog/tables/main.default.t/exists", None, "Unity Catalog"),
    ("GET", "/api/2.1/unity-catalog/volumes", None, "Unity Catalog"),
    ("GET", "/api/2.0/apps", None, "Databricks Apps"),
    ("POST", "/serving-endpoints/responses", {"model": "apps/my-agent", "input": "hi"}, "Databricks Apps"),
    ("POST", "/api/2.0/mlflow/unity-catalog/model-versions/generate-temporary-credentials", {}, "credentials"),
    ("GET", "/api/2.0/fs/files/Volumes/main/default/vol/x.txt", None, "volumes"),
    ("POST", "/api/2.0/serving-endpoints", {"name": "ro", "route_optimized": True, "config": {}}, "route_optimized"),
])
def test_unsupported_features_answer_501_naming_them(http, method, path, body, feature):
    answer = http.request(method, path, json=body)
    assert answer.status_code == 501, answer.text
    assert answer.json()["error_code"] == "NOT_IMPLEMENTED" and feature in answer.json()["message"]


def test_oauth_is_refused_before_authentication(platform):
    for path in ("/oidc/v1/token", "/oidc/.well-known/oauth-authorization-server"):
        answer = httpx.post(platform.base_url + path, data={"grant_type": "client_credentials"})
        assert answer.status_code == 501
        assert answer.json()["error_code"] == "NOT_IMPLEMENTED" and "OAuth" in answer.json()["message"]


def test_the_databricks_sdk_surfaces_the_refusals(guide):
    seen = guide("refused")
    for call, feature in (("table", "Unity Catalog"), ("apps", "Databricks Apps")):
        assert seen[call]["error_code"] == "NOT_IMPLEMENTED" and feature in seen[call]["message"], seen


def test_databricks_agents_lists_and_deletes_what_agentwharf_agents_deployed(guide, register, http):
    from agentwharf import agents

    model = register("info")
    deployment = agents.deploy(model, "1")
    seen = guide("adopt", model)
    assert model in seen["listed"]
    assert [(d["endpoint_name"], d["served_entity_name"], d["query_endpoint"]) for d in seen["got"]] == [
        (deployment.endpoint_name, deployment.served_entity_name, deployment.query_endpoint)]
    assert seen["left"] == [] and agents.get_deployments(model) == []
    assert http.get(f"/api/2.0/serving-endpoints/{deployment.endpoint_name}").status_code == 404


def _traffic(endpoint: dict) -> dict[str, int]:
    return {r["served_model_name"]: r["traffic_percentage"] for r in endpoint["config"]["traffic_config"]["routes"]}


def test_redeploy_serves_the_new_version_at_100_and_keeps_the_old_at_0(deployed, guide, http):
    """Redeploy: the monitor probe, tag and description PATCHes, then PUT .../config echoing
    the served entities as the client read them (output-only fields included)."""
    first = deployed["deployment"]["served_entity_name"]
    seen = guide("redeploy")
    second = seen["deployment"]["served_entity_name"]
    assert second == f"main-default-echo_{seen['version']}" != first
    endpoint = wait_until(lambda: _ready(http, ENDPOINT), timeout=300, message="the redeployed endpoint to be ready")
    assert _traffic(endpoint) == {second: 100, first: 0}
    assert {"key": "team", "value": "agents"} in endpoint["tags"] and endpoint["description"] == "the guide's echo agent"
    for entity in (first, second):
        answer = http.post(f"/serving-endpoints/{ENDPOINT}/served-models/{entity}/invocations",
                           json={"input": [{"role": "user", "content": entity}]})
        assert answer.json()["output"][0]["content"][0]["text"] == f"Echo: {entity}"
    deployed["second"] = seen


def test_delete_deployment_of_the_guides_versions(deployed, guide, http):
    """Last: takes the module's deployment down, newest version first."""
    from agentwharf import agents

    first = deployed["deployment"]["served_entity_name"]
    assert [d["served_entity_name"] for d in guide("delete", str(deployed["second"]["version"]))["left"]] == [first]
    assert _traffic(wait_until(lambda: _ready(http, ENDPOINT), timeout=60, message="the endpoint to settle")) == {first: 100}
    assert guide("delete", str(deployed["version"])) == {"left": []}
    assert http.get(f"/api/2.0/serving-endpoints/{ENDPOINT}").status_code == 404
    assert agents.get_deployments(MODEL) == []
    # agentwharf's own client still gets a 404 for a deployment that does not exist.
    assert http.delete(f"/api/2.0/agents/deployments/{MODEL}").status_code == 404
