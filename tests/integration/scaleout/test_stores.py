"""Where a scale-out platform keeps things: every table in PostgreSQL, every artifact in the S3
bucket, nothing in its home but logs, spool and keys; the Files API over the bucket; and the
stores' credentials in MLflow's server alone, never in a worker's environment or anyone's
command line."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import psycopg

from agentwharf import agents
from tests.integration.load import descendants
from tests.integration.scaleout.conftest import BUCKET
from tests.integration.conftest import ask


def _prefix(platform) -> str:
    return urlsplit(platform.env["AGENTWHARF_ARTIFACTS_URI"]).path.strip("/")


def _secrets(platform) -> dict[str, str]:
    return {"database password": urlsplit(platform.env["AGENTWHARF_DATABASE_URL"]).password,
            "S3 secret key": platform.env["AGENTWHARF_S3_SECRET_ACCESS_KEY"]}


def test_models_are_stored_in_the_bucket_and_the_tables_in_postgresql(platform, http, s3, logged, register):
    model = register("info")
    version = mlflow.MlflowClient().get_model_version(model, "1")
    keys = s3.keys(BUCKET, _prefix(platform) + "/")
    model_id = logged["info"].removeprefix("models:/")
    assert any(k.endswith(f"/models/{model_id}/artifacts/MLmodel") for k in keys), keys
    assert version.source == logged["info"]
    # The home holds no database and no artifact: they are the servers'.
    home = Path(platform.home)
    assert not (home / "agentwharf.db").exists() and not (home / "mlflow-auth.db").exists()
    assert not (home / "artifacts").exists() or not any((home / "artifacts").iterdir())
    with psycopg.connect(platform.env["AGENTWHARF_DATABASE_URL"]) as db:
        # MLflow's registry and tracking tables, its basic-auth store and agentwharf's, in one database.
        assert db.execute("SELECT COUNT(*) FROM model_versions WHERE name = %s", (model,)).fetchone() == (1,)
        assert db.execute("SELECT username FROM users WHERE username = 'admin'").fetchone() == ("admin",)
        assert db.execute("SELECT name FROM aw_principals WHERE name = 'admin'").fetchone() == ("admin",)
        assert db.execute("SELECT version_num FROM aw_alembic_version").fetchone()[0]


def test_files_api_reads_and_writes_the_bucket(platform, http, s3, register):
    model = register("info")
    catalog, schema, name = model.split(".")
    base = f"/Models/{catalog}/{schema}/{name}/1"
    listing = http.get(f"/api/2.0/fs/directories{base}")
    assert listing.status_code == 200, listing.text
    assert "MLmodel" in {e["name"] for e in listing.json()["contents"]}
    mlmodel = http.get(f"/api/2.0/fs/files{base}/MLmodel")
    source = mlflow.MlflowClient().get_model_version(model, "1").source.removeprefix("models:/")
    stored = next(k for k in s3.keys(BUCKET, _prefix(platform) + "/") if k.endswith(f"/models/{source}/artifacts/MLmodel"))
    assert mlmodel.status_code == 200 and mlmodel.content == s3.client().get_object(Bucket=BUCKET, Key=stored)["Body"].read()

    experiment = mlflow.set_experiment(f"/tests/files-{uuid.uuid4().hex[:6]}").experiment_id
    with mlflow.start_run() as run:
        pass
    run_files = f"/WorkspaceInternal/Mlflow/Artifacts/{experiment}/Runs/{run.info.run_id}/artifacts"
    put = http.put(f"/api/2.0/fs/files{run_files}/notes/hello.txt", content=b"hello from the Files API",
                   headers={"content-type": "application/octet-stream"})
    assert put.status_code == 204, put.text
    key = f"{_prefix(platform)}/{experiment}/{run.info.run_id}/artifacts/notes/hello.txt"
    assert s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"hello from the Files API"
    assert http.get(f"/api/2.0/fs/files{run_files}/notes/hello.txt").content == b"hello from the Files API"
    assert [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id, "notes")] == ["notes/hello.txt"]


def test_the_stores_credentials_stay_in_mlflows_server(platform, http, register):
    """Workers (model code) read models through MLflow's artifact service with a short-lived
    credential; neither they nor any other process of the platform holds the S3 keys or the
    database password in its environment, except MLflow's server, and no command line shows
    them."""
    model = register("info")
    deployment = agents.deploy(model, "1")
    assert ask(http, f"/serving-endpoints/{deployment.endpoint_name}/invocations").status_code == 200
    secrets = _secrets(platform)
    seen = {"worker": 0, "mlflow": 0}
    for pid in [platform.process.pid, *descendants(platform.process.pid)]:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue  # ended meanwhile
        for what, value in secrets.items():
            assert value not in command, f"the {what} is on the command line of pid {pid}: {command[:200]}"
        if "agentwharf.serving.worker" in command:
            seen["worker"] += 1
            for what, value in secrets.items():
                assert value not in environ, f"a worker (pid {pid}) holds the {what}"
            assert "AGENTWHARF_DATABASE_URL" not in environ and "AWS_SECRET_ACCESS_KEY" not in environ
        elif "agentwharf.platform.mlflow_exec" in command:  # MLflow's server, its uvicorn in that process
            seen["mlflow"] += 1
            assert secrets["S3 secret key"] in environ  # its S3 repository needs them, and only it
    assert seen["worker"] >= 1 and seen["mlflow"] == 1, seen
    agents.delete_deployment(model)
