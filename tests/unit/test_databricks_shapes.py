"""The Databricks-shaped answers built from MLflow's: each parses strictly as the message the
client parses it into (MLflow's UC registry protos), and keeps the reference's fields
(shared/reference/databricks-clients.md)."""

import orjson
import pytest
from google.protobuf.json_format import ParseDict
from mlflow.protos import databricks_uc_registry_messages_pb2 as uc

from agentwharf.databricks_compat.files_api import directory_entry
from agentwharf.databricks_compat.tracking_view import databricks_view, default_experiment, is_databricks_client
from agentwharf.databricks_compat.uc_registry import uc_model_version, uc_registered_model

MLFLOW_MODEL = {
    "name": "main.default.echo", "creation_timestamp": 1, "last_updated_timestamp": 2, "user_id": "admin",
    "description": "d", "latest_versions": [{"name": "main.default.echo", "version": "1"}],
    "tags": [{"key": "k", "value": "v"}], "aliases": [{"alias": "champion", "version": "1"}],
}
MLFLOW_VERSION = {
    "name": "main.default.echo", "version": "3", "creation_timestamp": 1, "last_updated_timestamp": 2, "user_id": "admin",
    "current_stage": "None", "description": "", "source": "models:/m-abc", "run_id": "r1", "status": "READY",
    "run_link": "", "aliases": ["champion"], "model_id": "m-abc", "tags": [{"key": "k", "value": "v"}],
}


def _strict(message, data):
    """ParseDict without ignore_unknown_fields: a field the UC message lacks fails."""
    return ParseDict(orjson.loads(orjson.dumps(data)), message)


def test_registered_model_is_a_uc_registered_model():
    shaped = uc_registered_model(MLFLOW_MODEL)
    parsed = _strict(uc.RegisteredModel(), shaped)
    assert parsed.name == "main.default.echo" and parsed.user_id == "admin"
    assert [(a.alias, a.version) for a in parsed.aliases] == [("champion", "1")]
    assert [(t.key, t.value) for t in parsed.tags] == [("k", "v")]
    _strict(uc.CreateRegisteredModelResponse(), {"registered_model": shaped})


def test_model_version_is_a_uc_model_version():
    shaped = uc_model_version(MLFLOW_VERSION)
    parsed = _strict(uc.ModelVersion(), shaped)
    assert (parsed.name, parsed.version, parsed.model_id, parsed.run_id) == ("main.default.echo", "3", "m-abc", "r1")
    assert uc.ModelVersionStatus.Name(parsed.status) == "READY"
    # MLflow's aliases are names; UC's carry the version they point at.
    assert [(a.alias, a.version) for a in parsed.aliases] == [("champion", "3")]
    for response in (uc.CreateModelVersionResponse(), uc.FinalizeModelVersionResponse(), uc.GetModelVersionResponse()):
        _strict(response, {"model_version": shaped})
    _strict(uc.SearchModelVersionsResponse(), {"model_versions": [shaped], "next_page_token": "t"})


def test_model_version_sources_are_shown_in_the_databricks_form():
    shaped = uc_model_version({**MLFLOW_VERSION, "source": "mlflow-artifacts:/0/models/m-abc/artifacts", "version": 4})
    assert shaped["source"] == "dbfs:/databricks/mlflow-tracking/0/logged_models/m-abc/artifacts"
    assert shaped["version"] == "4"


def test_what_the_mlflow_client_builds_from_them():
    from mlflow.utils._unity_catalog_utils import model_version_from_uc_proto, registered_model_from_uc_proto

    version = model_version_from_uc_proto(_strict(uc.ModelVersion(), uc_model_version(MLFLOW_VERSION)))
    assert (version.name, version.version, version.status, version.aliases) == ("main.default.echo", "3", "READY", ["champion"])
    model = registered_model_from_uc_proto(_strict(uc.RegisteredModel(), uc_registered_model(MLFLOW_MODEL)))
    assert model.name == "main.default.echo" and model.tags == {"k": "v"}


def test_directory_entries_have_the_reference_fields():
    entry = directory_entry("/Models/main/default/echo/1", {"path": "MLmodel", "is_dir": False, "file_size": 42})
    assert entry == {"path": "/Models/main/default/echo/1/MLmodel", "name": "MLmodel", "is_directory": False, "file_size": 42}
    folder = directory_entry("/Models/main/default/echo/1/", {"path": "code", "is_dir": True})
    assert folder == {"path": "/Models/main/default/echo/1/code", "name": "code", "is_directory": True}
    # Every key is one of the reference's {path, name, is_directory, file_size, last_modified}.
    assert set(entry) <= {"path", "name", "is_directory", "file_size", "last_modified"}


def test_tracking_answers_show_artifact_uris_in_the_databricks_form_and_nothing_else():
    answer = {
        "experiments": [{"experiment_id": "3", "artifact_location": "mlflow-artifacts:/3", "tags": [
            {"key": "note", "value": "mlflow-artifacts:/3/x"}]}],
        "run": {"info": {"run_id": "r", "artifact_uri": "mlflow-artifacts:/3/r/artifacts"},
                "data": {"params": [{"key": "artifact_uri", "value": "mlflow-artifacts:/3/keep"}]}},
        "model": {"info": {"artifact_uri": "mlflow-artifacts:/3/models/m-1/artifacts"}},
        "other": "s3://bucket/x",
    }
    viewed = databricks_view(answer)
    assert viewed["experiments"][0]["artifact_location"] == "dbfs:/databricks/mlflow-tracking/3"
    assert viewed["experiments"][0]["tags"][0]["value"] == "mlflow-artifacts:/3/x"
    assert viewed["run"]["info"]["artifact_uri"] == "dbfs:/databricks/mlflow-tracking/3/r/artifacts"
    assert viewed["run"]["data"]["params"][0]["value"] == "mlflow-artifacts:/3/keep"
    assert viewed["model"]["info"]["artifact_uri"] == "dbfs:/databricks/mlflow-tracking/3/logged_models/m-1/artifacts"
    assert viewed["other"] == "s3://bucket/x"


@pytest.mark.parametrize("sent, experiment", [
    ({"experiment_id": "None", "start_time": 1}, "0"),
    ({"start_time": 1}, "0"),
    ({"experiment_id": "", "start_time": 1}, "0"),
    ({"experiment_id": "5", "start_time": 1}, "5"),
])
def test_runs_without_an_experiment_go_to_the_default_one(sent, experiment):
    body = orjson.loads(default_experiment(orjson.dumps(sent)))
    assert body == {**sent, "experiment_id": experiment}


def test_bodies_that_are_not_json_objects_pass_unchanged():
    assert default_experiment(b"not json") == b"not json"
    assert default_experiment(b"[1]") == b"[1]"


def test_databricks_clients_are_told_by_their_sdk_user_agent():
    def scope(agent: bytes) -> dict:
        return {"headers": [(b"user-agent", agent)]}

    assert is_databricks_client(scope(b"unknown/0.0.0 databricks-sdk-py/0.156.0 python/3.11.7 os/linux auth/pat"))
    assert not is_databricks_client(scope(b"mlflow-python-client/3.17.2"))
    assert not is_databricks_client({"headers": []})
