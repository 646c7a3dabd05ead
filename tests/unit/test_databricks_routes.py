"""Every Databricks-compatibility route is reachable: the platform sends its path to the control
app (a route whose prefix is missing would fall through to MLflow and 404 there)."""

from agentwharf import databricks_compat
from agentwharf.platform.app import _CONTROL_PREFIXES


def _paths():
    for router in databricks_compat.ROUTERS:
        for route in router.routes:
            yield route.path


def test_every_compat_route_is_routed_to_the_control_app():
    paths = list(_paths())
    assert len(paths) > 30
    assert [p for p in paths if not p.startswith(_CONTROL_PREFIXES)] == []


def test_every_control_plane_route_is_routed_to_the_control_app():
    from agentwharf.control.app import ROUTERS

    paths = [route.path for router in ROUTERS for route in router.routes]
    assert len(paths) > 30
    assert [p for p in paths if not p.startswith(_CONTROL_PREFIXES)] == []


def test_oauth_is_not_a_control_route():
    """/oidc/ is answered before authentication, so it must not need the control app."""
    assert not any(p.startswith(databricks_compat.OAUTH_PREFIX) for p in _paths())
    assert not databricks_compat.OAUTH_PREFIX.startswith(_CONTROL_PREFIXES)


def test_the_table_probe_is_matched_before_the_unity_catalog_catch_all():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    for router in databricks_compat.ROUTERS:
        app.include_router(router)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.get("/api/2.1/unity-catalog/tables/main.default.echo_payload/exists").json() == {"table_exists": False}
    assert client.get("/api/2.0/mlflow/unity-catalog/registered-models:is-databricks-sdk-models-artifact-repository-enabled"
                      ).json() == {"is_databricks_sdk_models_artifact_repository_enabled": True}
