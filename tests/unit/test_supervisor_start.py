"""A served version's start never ends silently: a failure the supervisor did not plan for
makes the version FAILED with the reason, and a request to a version that does not become
ready is answered 503 within the cold-start timeout. Real supervisor, real environments, real
worker processes."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from agentwharf.errors import DeploymentFailed, MlflowUnavailable, Unavailable
from agentwharf.serving.environments import Environments
from agentwharf.serving.supervisor import Supervisor, WorkerLauncher, WorkerSpec


def _supervisor(tmp_path, launcher: WorkerLauncher, environments: Environments | None = None,
                cold_start_timeout: float = 60.0) -> Supervisor:
    (tmp_path / "run").mkdir(exist_ok=True)
    return Supervisor(launcher, tmp_path / "run", tmp_path / "logs", environments=environments, start_timeout=60.0,
                      backoff_min=0.1, backoff_max=1.0, idle_seconds=600.0, cold_start_timeout=cold_start_timeout)


def _base_env(tmp_path) -> dict[str, str]:
    # No MLflow server there: whatever the builder or a worker asks of it fails at once.
    return {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "HOME": str(tmp_path)}


def _mlflow_down(_model_uri: str) -> dict[str, bytes]:
    raise MlflowUnavailable("MLflow answered 503 to /api/2.0/mlflow/model-versions/get-download-uri")


def test_mlflow_failing_while_a_restart_checks_for_a_built_environment_does_not_strand_the_version(tmp_path):
    """Right after a restart on a busy machine, asking MLflow whether the version's environment
    is built already can fail. That used to end the start task in silence: the version stayed
    STARTING with no worker, and its requests waited until they timed out. Now the builder
    decides; here it cannot fetch the model either, and the deploy says so."""
    environments = Environments(tmp_path / "envs", tmp_path / "models", tmp_path / "runtime", "uv",
                                _base_env(tmp_path), env_files=_mlflow_down, timeout=120)
    supervisor = _supervisor(tmp_path, WorkerLauncher(1, _base_env(tmp_path)), environments)

    async def scenario():
        supervisor.ensure(WorkerSpec(key="ep/one", model_uri="models:/absent/1", replicas=1))
        supervisor.ensure(WorkerSpec(key="ep/two", model_uri="models:/absent/2", replicas=1))
        try:
            return await asyncio.gather(*(supervisor.wait_ready(k, 90) for k in ("ep/one", "ep/two")),
                                        return_exceptions=True)
        finally:
            await supervisor.close()

    results = asyncio.run(scenario())
    for result in results:
        assert isinstance(result, DeploymentFailed), result
        assert "environment of models:/absent/" in result.message
    assert "preparing the environment" in (tmp_path / "logs" / "workers" / "ep" / "one-build.log").read_text()


def test_a_worker_that_cannot_be_launched_fails_the_version_at_once(tmp_path):
    """The worker's load credential cannot be made (an unreadable signing key, say): the
    version is FAILED with the reason within seconds, and no worker is left waiting for it."""

    def no_credential(_key: str) -> str:
        raise OSError("signing.key: permission denied")

    supervisor = _supervisor(tmp_path, WorkerLauncher(1, _base_env(tmp_path), load_credential=no_credential))

    async def scenario():
        version = supervisor.ensure(WorkerSpec(key="ep/one", model_uri="models:/m/1", replicas=1))
        started = time.monotonic()
        try:
            with pytest.raises(DeploymentFailed) as failed:
                await supervisor.wait_ready("ep/one", 30)
            return failed.value, time.monotonic() - started, version.replicas[0].process
        finally:
            await supervisor.close()

    error, seconds, process = asyncio.run(scenario())
    assert "OSError: signing.key: permission denied" in error.message
    assert seconds < 10
    assert process is None or process.returncode is not None


def test_a_request_to_a_version_that_never_becomes_ready_gets_503_within_the_cold_start_timeout(tmp_path):
    """The worker hangs loading its model (MLflow accepts the connection and never answers):
    the request waits the cold-start timeout, not forever, and is told to retry."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are accepted by the kernel and never answered
    env = {**_base_env(tmp_path), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}"}
    supervisor = _supervisor(tmp_path, WorkerLauncher(1, env), cold_start_timeout=2.0)

    async def scenario():
        supervisor.ensure(WorkerSpec(key="ep/one", model_uri="models:/m/1", replicas=1))
        started = time.monotonic()
        try:
            with pytest.raises(Unavailable) as refused:
                await supervisor.acquire("ep/one")
            return refused.value, time.monotonic() - started, supervisor.versions["ep/one"].state
        finally:
            await supervisor.close()

    try:
        error, seconds, state = asyncio.run(scenario())
    finally:
        silent.close()
    assert error.http_status == 503
    assert "did not start within 2s; retry shortly" in error.message
    assert 2.0 <= seconds < 10
    assert state == "STARTING"
