"""MLflow's own tracking server as a child process of the platform.

It is MLflow's real ``mlflow server``: its REST API, UI and AI Gateway unchanged, and its job
runner when a setting asks for it (its consumers cost ~2 GB at rest; without it the server runs
as one process, see ``mlflow_exec``).
It listens on a private loopback port; the platform proxies everything that is not its own
to it, so users see one base URL.

Artifacts are served by MLflow (``--serve-artifacts``): every client, the platform's workers and
environment builder included, reads and writes them through MLflow's artifact service at the
base URL, whatever stores them (a local folder, or S3 through MLflow's own S3 repository). So
the object store's credentials are given to this process alone, and model code never holds
them. The database URL (which may carry a password) is handed over in the environment, not on
the command line, where any user of the machine could read it in ``ps``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from agentwharf.auth.home_secrets import private_key, write_private
from agentwharf.auth.mlflow_plugin import ADMIN_ENV, SECRET_ENV
from agentwharf.children import die_with_parent, log_tail, open_log
from agentwharf.tls import tls_context

log = logging.getLogger("agentwharf.mlflow")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


#: How long MLflow's server finishes requests in progress once told to stop.
GRACEFUL_SHUTDOWN_SECONDS = 5

#: MLflow's basic-auth app, configured to trust the platform (see ``auth.mlflow_plugin``).
#: ``NO_PERMISSIONS`` by default: a user sees the MLflow resources they created or were granted.
_AUTH_CONFIG = """[mlflow]
default_permission = NO_PERMISSIONS
database_uri = {database_uri}
admin_username = {admin}
admin_password = {admin_password}
authorization_function = agentwharf.auth.mlflow_plugin:authenticate
"""


class MlflowServer:
    def __init__(self, database_uri: str, artifacts_destination: str, log_path: Path, workers: int, environ: dict[str, str],
                 *, auth_database_uri: str, secrets_dir: Path, admin: str, job_execution: bool = False,
                 artifact_store_env: dict[str, str] | None = None, extra_env: dict[str, str] | None = None):
        self.database_uri = database_uri
        #: MLflow's own settings the platform chooses (its AI Gateway's key and policy).
        self.extra_env = extra_env or {}
        self.auth_database_uri = auth_database_uri
        self.secrets_dir = secrets_dir
        self.admin = admin
        #: Per start: only this platform process and the MLflow server ever hold it.
        self.secret = secrets.token_urlsafe(32)
        #: A local folder, or ``s3://bucket/prefix`` (whose credentials are ``artifact_store_env``).
        self.artifacts_destination = artifacts_destination
        self.artifact_store_env = artifact_store_env or {}
        self.log_path = log_path
        self.workers = workers
        self.environ = environ
        self.job_execution = job_execution
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._launched_at = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        launcher = ["-m", "mlflow", "server"] if self.job_execution else ["-m", "agentwharf.platform.mlflow_exec"]
        return [
            sys.executable, *launcher,
            # --backend-store-uri: MLFLOW_BACKEND_STORE_URI in the environment (see start).
            "--artifacts-destination", self.artifacts_destination,
            "--serve-artifacts",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
            "--app-name", "basic-auth",
            # Told to stop (by the platform, or by Linux when the platform died), uvicorn waits
            # for requests in progress without end: one stuck on a slow upstream kept an orphan
            # server alive for minutes after a kill -9 of the platform.
            "--uvicorn-opts", f"--timeout-graceful-shutdown {GRACEFUL_SHUTDOWN_SECONDS}",
        ]

    def _auth_env(self) -> dict[str, str]:
        config = self.secrets_dir / "mlflow-auth.ini"
        write_private(config, _AUTH_CONFIG.format(
            database_uri=self.auth_database_uri, admin=self.admin,
            # MLflow insists on an admin password; nobody ever uses it (the platform vouches).
            admin_password=secrets.token_urlsafe(24) + "Aa1!",
        ).encode())
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(config),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": private_key(self.secrets_dir / "mlflow-flask.key").hex(),
            SECRET_ENV: self.secret,
            ADMIN_ENV: self.admin,
        }

    @property
    def launched(self) -> bool:
        return self.process is not None

    def launch(self) -> None:
        """Start the server's process; ``wait_ready`` waits for it to answer."""
        self.port = free_port()
        if "://" not in self.artifacts_destination:
            Path(self.artifacts_destination).mkdir(parents=True, exist_ok=True)
        env = {**self.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if self.job_execution else "false",
               "MLFLOW_BACKEND_STORE_URI": self.database_uri, **self.artifact_store_env, **self.extra_env,
               **self._auth_env()}
        with open_log(self.log_path) as out:
            # Its own session, so stop() can signal MLflow's whole tree (uvicorn and job runner).
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env,
                                            start_new_session=True, preexec_fn=die_with_parent)
        self._launched_at = time.monotonic()

    async def wait_ready(self, timeout: float) -> None:
        """Wait for the launched server's ``/health``.

        Raises:
            RuntimeError: it exited or did not answer in time; the message has its log tail.
        """
        started = self._launched_at
        async with httpx.AsyncClient(timeout=2.0, verify=tls_context()) as client:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(f"MLflow server exited with code {self.process.returncode}:\n{log_tail(self.log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/health")).status_code == 200:
                        log.info("MLflow server ready on %s in %.1fs", self.url, time.monotonic() - started)
                        return
                # Every 50 ms: `agentwharf up` answers as soon as this does (a refused
                # connection on loopback costs next to nothing).
                await asyncio.sleep(0.05)
        await self.stop()
        raise RuntimeError(f"MLflow server did not answer within {timeout:.0f}s:\n{log_tail(self.log_path)}")

    async def stop(self, grace: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
