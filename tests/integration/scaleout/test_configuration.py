"""``agentwharf up`` with a database or artifact store it cannot use: one clear sentence naming
the setting and the server's reason, exit code 1, no stack trace and no secret printed, and
nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from tests.integration.platform_process import free_port
from tests.integration.scaleout.conftest import BUCKET, scaleout_env


def up(tmp_path, env: dict[str, str]) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    done = subprocess.run([sys.executable, "-m", "agentwharf.cli.main", "up", "--home", str(home), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250", **env})
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert not (home / "platform.pid").exists() and not (home / "logs" / "mlflow.log").exists()
    return done


def _said(done: subprocess.CompletedProcess) -> str:
    return " ".join((done.stdout + done.stderr).split())  # rich folds long lines


def test_a_wrong_database_password_is_said_without_the_password(tmp_path, postgres, s3):
    env = scaleout_env(postgres, s3, "wrong-password")
    right = urlsplit(env["AGENTWHARF_DATABASE_URL"]).password
    env["AGENTWHARF_DATABASE_URL"] = env["AGENTWHARF_DATABASE_URL"].replace(f":{right}@", ":not-the-password@")
    said = _said(up(tmp_path, env))
    assert "Cannot connect to the database AGENTWHARF_DATABASE_URL names (postgresql://postgres:***@127.0.0.1:" in said
    assert "password authentication failed" in said
    assert "not-the-password" not in said and right not in said


def test_an_unreachable_database_is_said(tmp_path, postgres, s3):
    env = scaleout_env(postgres, s3, "unreachable")
    env["AGENTWHARF_DATABASE_URL"] = env["AGENTWHARF_DATABASE_URL"].replace(f":{postgres.port}/", f":{free_port()}/")
    assert "Cannot connect to the database AGENTWHARF_DATABASE_URL names" in _said(up(tmp_path, env))


def test_a_missing_bucket_is_said(tmp_path, postgres, s3):
    env = {**scaleout_env(postgres, s3, "no-bucket"), "AGENTWHARF_ARTIFACTS_URI": "s3://no-such-bucket/models"}
    said = _said(up(tmp_path, env))
    assert "Cannot write to the artifact store s3://no-such-bucket/models at http://127.0.0.1:" in said
    assert "bucket 'no-such-bucket' does not exist" in said
    assert BUCKET not in said


def test_an_unreachable_object_store_is_said(tmp_path, postgres, s3):
    env = {**scaleout_env(postgres, s3, "no-store"), "AGENTWHARF_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    said = _said(up(tmp_path, env))
    assert "Cannot reach the artifact store s3://agentwharf-scaleout/no-store" in said
    assert env["AGENTWHARF_S3_SECRET_ACCESS_KEY"] not in said


@pytest.mark.parametrize(("setting", "value", "fragment"), [
    ("AGENTWHARF_DATABASE_URL", "mysql://root:hunter2@db/agentwharf", "AGENTWHARF_DATABASE_URL must be postgresql://"),
    ("AGENTWHARF_ARTIFACTS_URI", "gs://bucket/prefix", "AGENTWHARF_ARTIFACTS_URI must be s3://bucket/prefix or a local folder"),
    ("AGENTWHARF_ARTIFACTS_URI", "s3:///prefix-without-bucket", "names no bucket"),
])
def test_settings_of_the_wrong_kind_are_refused_by_name(tmp_path, setting, value, fragment):
    said = _said(up(tmp_path, {setting: value}))
    assert "Invalid configuration" in said and fragment in said
    assert "hunter2" not in said
