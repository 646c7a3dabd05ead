"""databricks_compat.uris: MLflow's, Databricks' and the Files API's names for one file agree."""

import pytest

from agentwharf.databricks_compat.uris import (
    ModelFilesPath,
    files_path_of_model,
    mlflow_artifact_path,
    parse_files_path,
    to_databricks_uri,
    to_mlflow_uri,
)
from agentwharf.errors import InvalidParameter, NotImplementedByPlatform

PAIRS = [
    ("mlflow-artifacts:/0", "dbfs:/databricks/mlflow-tracking/0"),
    ("mlflow-artifacts:/12/5f3a/artifacts", "dbfs:/databricks/mlflow-tracking/12/5f3a/artifacts"),
    ("mlflow-artifacts:/0/models/m-abc/artifacts", "dbfs:/databricks/mlflow-tracking/0/logged_models/m-abc/artifacts"),
    ("mlflow-artifacts:/3/models/m-abc/artifacts/MLmodel",
     "dbfs:/databricks/mlflow-tracking/3/logged_models/m-abc/artifacts/MLmodel"),
]


@pytest.mark.parametrize("mlflow_uri, databricks_uri", PAIRS)
def test_artifact_uris_map_both_ways(mlflow_uri, databricks_uri):
    assert to_databricks_uri(mlflow_uri) == databricks_uri
    assert to_mlflow_uri(databricks_uri) == mlflow_uri


@pytest.mark.parametrize("uri", ["s3://bucket/0/x", "models:/m-abc", "runs:/abc/model", "/tmp/x", "mlflow-artifacts:/notanid/x",
                                 "dbfs:/Volumes/a/b", "models:/main.default.echo/1"])
def test_other_uris_are_left_alone(uri):
    assert to_databricks_uri(uri) == uri
    assert to_mlflow_uri(uri) == uri


def test_the_databricks_form_is_what_mlflow_picks_its_databricks_repositories_by():
    from mlflow.store.artifact.databricks_logged_model_artifact_repo import DatabricksLoggedModelArtifactRepository
    from mlflow.store.artifact.databricks_run_artifact_repo import DatabricksRunArtifactRepository

    run = to_databricks_uri("mlflow-artifacts:/7/0123456789abcdef0123456789abcdef/artifacts")
    model = to_databricks_uri("mlflow-artifacts:/7/models/m-1/artifacts")
    assert DatabricksRunArtifactRepository.is_run_uri(run) and not DatabricksLoggedModelArtifactRepository.is_logged_model_uri(run)
    assert DatabricksLoggedModelArtifactRepository.is_logged_model_uri(model)


@pytest.mark.parametrize("files_path, artifact_path", [
    ("/WorkspaceInternal/Mlflow/Artifacts/7/Runs/abc/artifacts/x.txt", "7/abc/artifacts/x.txt"),
    ("WorkspaceInternal/Mlflow/Artifacts/7/LoggedModels/m-1/artifacts/MLmodel", "7/models/m-1/artifacts/MLmodel"),
    ("/WorkspaceInternal/Mlflow/Artifacts/7/LoggedModels/m-1", "7/models/m-1"),
])
def test_workspace_internal_paths_are_mlflow_artifact_paths(files_path, artifact_path):
    assert parse_files_path(files_path) == artifact_path


def test_files_paths_match_mlflows_databricks_repository_roots():
    """The Files API roots MLflow's own repositories compute from the Databricks URIs we show
    land on the artifact paths MLflow's server uses."""
    from mlflow.store.artifact.databricks_logged_model_artifact_repo import DatabricksLoggedModelArtifactRepository
    from mlflow.store.artifact.databricks_run_artifact_repo import DatabricksRunArtifactRepository

    for mlflow_uri, cls in [("mlflow-artifacts:/7/abc/artifacts", DatabricksRunArtifactRepository),
                            ("mlflow-artifacts:/7/models/m-1/artifacts", DatabricksLoggedModelArtifactRepository)]:
        match = cls._URI_REGEX.search(to_databricks_uri(mlflow_uri))
        root = cls._build_root_path(None, match.group("experiment_id"), match, match.group("relative_path") or "")
        assert parse_files_path(root) == mlflow_artifact_path(mlflow_uri)


def test_model_paths():
    assert parse_files_path("/Models/main/default/echo/3/MLmodel") == ModelFilesPath("main.default.echo", "3", "MLmodel")
    assert parse_files_path("/Models/main/default/echo/3") == ModelFilesPath("main.default.echo", "3", "")
    assert parse_files_path("/Models/c/s/m/1/a/b") == ModelFilesPath("c.s.m", "1", "a/b")
    assert files_path_of_model("main.default.echo", "3") == "/Models/main/default/echo/3"
    assert files_path_of_model("main.default.echo", "3", "MLmodel") == "/Models/main/default/echo/3/MLmodel"


def test_mlflows_models_repository_root_is_a_model_path():
    from mlflow.store.artifact.databricks_sdk_models_artifact_repo import DatabricksSDKModelsArtifactRepository

    repo = DatabricksSDKModelsArtifactRepository.__new__(DatabricksSDKModelsArtifactRepository)
    repo.model_base_path = f"/Models/{'main.default.echo'.replace('.', '/')}/4"
    assert parse_files_path(repo.model_base_path + "/MLmodel") == ModelFilesPath("main.default.echo", "4", "MLmodel")


@pytest.mark.parametrize("path", ["/Models/c/s/m/1/../../../x", "/Models/c/s/m/1/./a", "/WorkspaceInternal/Mlflow/Artifacts/7/Runs//x",
                                  "/Models/c/s/m/notaversion/x", "/Models/c/s", "/WorkspaceInternal/Mlflow/Artifacts/x/Runs/a",
                                  "/WorkspaceInternal/Mlflow/Artifacts/7/Traces/tr-1"])
def test_bad_paths_are_refused(path):
    with pytest.raises(InvalidParameter) as refused:
        parse_files_path(path)
    assert refused.value.error_code == "INVALID_PARAMETER_VALUE"


@pytest.mark.parametrize("path", ["/Volumes/main/default/vol/x.txt", "/Workspace/Users/a/x"])
def test_volumes_and_workspace_files_are_not_served_and_say_so(path):
    with pytest.raises(NotImplementedByPlatform) as refused:
        parse_files_path(path)
    assert refused.value.error_code == "NOT_IMPLEMENTED" and refused.value.http_status == 501
    assert "volumes" in refused.value.message


def test_mlflow_artifact_path():
    assert mlflow_artifact_path("mlflow-artifacts:/0/models/m-1/artifacts") == "0/models/m-1/artifacts"
    assert mlflow_artifact_path("mlflow-artifacts:///0/x") == "0/x"
    assert mlflow_artifact_path("s3://b/0/x") is None
