"""The serving-endpoints REST API in Databricks' shapes."""

from __future__ import annotations

from collections import Counter

from tests.integration.conftest import ask
from tests.integration.platform_process import wait_until


def wait_ready(http, name):
    def ready():
        view = http.get(f"/api/2.0/serving-endpoints/{name}").json()
        return view if view["state"]["config_update"] != "IN_PROGRESS" else None

    return wait_until(ready, timeout=120, message=f"{name} to finish updating")


def test_create_get_list_update_delete(http, register):
    model = register("info", versions=2)
    create = http.post("/api/2.0/serving-endpoints", json={
        "name": "rest-ep",
        "config": {"served_entities": [{"entity_name": model, "entity_version": "1", "workload_size": "Small",
                                        "scale_to_zero_enabled": False}]},
        "tags": [{"key": "owner", "value": "me"}],
        "description": "made over REST",
    })
    assert create.status_code == 200, create.text
    created = create.json()
    assert created["name"] == "rest-ep" and created["state"]["config_update"] == "IN_PROGRESS"
    assert created["pending_config"]["served_entities"][0]["name"] == f"{model.replace('.', '-')}_1"

    view = wait_ready(http, "rest-ep")
    assert view["state"]["ready"] == "READY"
    assert view["description"] == "made over REST"
    assert view["config"]["traffic_config"]["routes"] == [{"served_model_name": f"{model.replace('.', '-')}_1", "traffic_percentage": 100}]
    assert "rest-ep" in [e["name"] for e in http.get("/api/2.0/serving-endpoints").json()["endpoints"]]

    # Split traffic 50/50 over two named entities; unknown echoed fields (state) are ignored.
    update = http.put("/api/2.0/serving-endpoints/rest-ep/config", json={
        "served_entities": [
            {"name": f"{model.replace('.', '-')}_1", "entity_name": model, "entity_version": "1", "state": {"deployment": "X"}},
            {"name": "two", "entity_name": model, "entity_version": "2"},
        ],
        "traffic_config": {"routes": [{"served_model_name": f"{model.replace('.', '-')}_1", "traffic_percentage": 50},
                                      {"served_model_name": "two", "traffic_percentage": 50}]},
    })
    assert update.status_code == 200, update.text
    view = wait_ready(http, "rest-ep")
    assert view["config"]["config_version"] == 2
    seen = Counter(ask(http, "/serving-endpoints/rest-ep/invocations").json()["custom_outputs"]["entity"] for _ in range(60))
    assert set(seen) == {f"{model.replace('.', '-')}_1", "two"}
    assert min(seen.values()) >= 12  # 50/50 within generous bounds

    assert http.delete("/api/2.0/serving-endpoints/rest-ep").json() == {}
    missing = http.get("/api/2.0/serving-endpoints/rest-ep")
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert ask(http, "/serving-endpoints/rest-ep/invocations").status_code == 404


def test_bad_configs_are_400_naming_the_field_and_change_nothing(http, register):
    model = register("info")
    ok = http.post("/api/2.0/serving-endpoints", json={"name": "bad-cfg", "config": {"served_entities": [{"entity_name": model, "entity_version": "1"}]}})
    assert ok.status_code == 200
    before = wait_ready(http, "bad-cfg")
    entity = {"entity_name": model, "entity_version": "1", "name": "a"}
    cases = [
        ({"served_entities": [entity], "traffic_config": {"routes": [{"served_model_name": "a", "traffic_percentage": 90}]}}, "sum to 100"),
        ({"served_entities": [entity], "traffic_config": {"routes": [{"served_model_name": "zzz", "traffic_percentage": 100}]}}, "zzz"),
        ({"served_entities": [{"entity_version": "1"}]}, "entity_name"),
        ({"served_entities": []}, "served_entities"),
        ({"served_entities": [{**entity, "environment_vars": {"ok": "1"}}]}, "'ok'"),
    ]
    for body, fragment in cases:
        answer = http.put("/api/2.0/serving-endpoints/bad-cfg/config", json=body)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert fragment in answer.json()["message"]
    assert http.get("/api/2.0/serving-endpoints/bad-cfg").json()["config"] == before["config"]
    http.delete("/api/2.0/serving-endpoints/bad-cfg")


def test_request_shape_errors(http):
    cases = [
        (dict(method="POST", url="/api/2.0/serving-endpoints", content=b"{oops", headers={"content-type": "application/json"}), 400, "INVALID_PARAMETER_VALUE"),
        (dict(method="POST", url="/api/2.0/serving-endpoints", content=b"x", headers={"content-type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE"),
        (dict(method="POST", url="/api/2.0/serving-endpoints", json={"name": "bad name!", "config": {}}), 400, "INVALID_PARAMETER_VALUE"),
        (dict(method="PUT", url="/api/2.0/serving-endpoints/nope/config", json={"served_entities": [{"entity_name": "a.b.c", "entity_version": "1"}]}), 404, "RESOURCE_DOES_NOT_EXIST"),
        (dict(method="DELETE", url="/api/2.0/serving-endpoints/nope"), 404, "RESOURCE_DOES_NOT_EXIST"),
        (dict(method="GET", url="/api/2.0/agents/deployments/a.b.c/versions/1"), 200, None),
        (dict(method="DELETE", url="/api/2.0/agents/deployments/a.b.c"), 404, "RESOURCE_DOES_NOT_EXIST"),
        (dict(method="PATCH", url="/api/2.0/serving-endpoints"), 405, "METHOD_NOT_ALLOWED"),
    ]
    for request, status, code in cases:
        answer = http.request(**request)
        assert answer.status_code == status, (request, answer.text)
        if code:
            assert answer.json()["error_code"] == code
            assert answer.json()["message"]


def test_duplicate_endpoint_is_409(http, register):
    model = register("info")
    body = {"name": "dup-ep", "config": {"served_entities": [{"entity_name": model, "entity_version": "1"}]}}
    assert http.post("/api/2.0/serving-endpoints", json=body).status_code == 200
    again = http.post("/api/2.0/serving-endpoints", json=body)
    assert again.status_code == 409 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    wait_ready(http, "dup-ep")
    http.delete("/api/2.0/serving-endpoints/dup-ep")


def test_mlflow_is_reachable_under_the_base_url(http, platform):
    import mlflow

    client = mlflow.MlflowClient(platform.base_url)
    assert client.search_experiments()  # MLflow's REST API through the platform
    ui = http.get("/")
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    assert http.get("/healthz").json()["status"] == "ok"


def test_the_control_plane_describes_itself(platform, http):
    spec = http.get("/api/2.0/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert {"/api/2.0/serving-endpoints", "/api/2.0/serving-endpoints/{name}/config",
            "/api/2.0/agents/deployments:deploy"} <= set(paths)
    page = http.get("/api/2.0/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<code>/api/2.0/serving-endpoints/{name}/inference-table</code>" in page.text
    assert "http://" not in page.text.replace(platform.base_url, "") and "https://" not in page.text  # nothing from elsewhere
    import httpx

    assert httpx.get(f"{platform.base_url}/api/2.0/openapi.json").status_code == 401
