"""The configuration of "Running on more than one machine": every store in PostgreSQL and
artifacts in an S3-compatible store, both real servers started for the session
(``tests/integration/services.py``), the platform told only ``AGENTWHARF_DATABASE_URL`` and
``AGENTWHARF_ARTIFACTS_URI`` (+ the store's endpoint and keys).

The package's platform replaces the session's SQLite one for the tests collected here: the
deploy tests, a governance subset and the kill -9 durability test of the SQLite suite run again
on it (their modules here import them), beside what only this configuration has.
"""

from __future__ import annotations

import contextlib
import os

import httpx
import mlflow
import pytest

from tests.integration.conftest import AGENTS, PLATFORM_ENV, _log
from tests.integration.platform_process import PlatformProcess, client_state
from tests.integration.services import PostgresCluster, S3Server

BUCKET = "agentwharf-scaleout"


def scaleout_env(postgres: PostgresCluster, s3: S3Server, name: str) -> dict[str, str]:
    """Settings of a platform whose database is a new one in ``postgres`` and whose artifacts
    are under ``s3://agentwharf-scaleout/<name>``."""
    if BUCKET not in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}:
        s3.create_bucket(BUCKET)
    return {"AGENTWHARF_DATABASE_URL": postgres.create_database(name.replace("-", "_")), **s3.platform_env(BUCKET, name)}


@contextlib.contextmanager
def clients_at(platform: PlatformProcess):
    """MLflow's client and agentwharf's (this process's) pointed at ``platform``, then put back
    as they were (``client_state``: the variables, the tracking URI, the active experiment)."""
    import mlflow.tracking.fluent as fluent

    with client_state():
        os.environ.update(platform.client_env())
        mlflow.set_tracking_uri(platform.base_url)
        fluent._active_experiment_id = None  # an experiment id of another platform means nothing here
        yield platform


@pytest.fixture(scope="package")
def platform(postgres, s3, tmp_path_factory):
    proc = PlatformProcess(tmp_path_factory.mktemp("scaleout") / "home",
                           env={**PLATFORM_ENV, **scaleout_env(postgres, s3, "package-platform")}).start()
    # Fixtures of wider scope than a test (``logged``, the governance module's ``shared``)
    # call MLflow's client before any per-test fixture runs: point it here for the package.
    try:
        with clients_at(proc):
            yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def http(platform):
    with httpx.Client(base_url=platform.base_url, timeout=60, headers=platform.headers) as client:
        yield client


@pytest.fixture(scope="package")
def logged(platform) -> dict[str, str]:
    """The test agents logged to this platform (into S3)."""
    return {name: _log(AGENTS / f"{name}_agent.py") for name in ("info", "broken")}
