"""A real agentwharf platform in a subprocess, on a free port, for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


CLIENT_VARIABLES = ("AGENTWHARF_HOST", "AGENTWHARF_TOKEN", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN")


@contextlib.contextmanager
def client_state():
    """Put this process's clients back as they were afterwards: the variables the CLI, the SDK
    and MLflow read, MLflow's fluent tracking URI and its active experiment. A fixture that
    points them at a platform of its own and forgets to do so leaves every later test talking
    to a stopped server (and MLflow's client retries that for minutes)."""
    import mlflow
    import mlflow.tracking.fluent as fluent

    uri, experiment = mlflow.get_tracking_uri(), fluent._active_experiment_id
    saved = {key: os.environ.get(key) for key in CLIENT_VARIABLES}
    try:
        yield
    finally:
        mlflow.set_tracking_uri(uri)
        fluent._active_experiment_id = experiment
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Debian's default soft limit on open files: platforms under test start with it, as they would
#: on a fresh machine, whatever this test process was given.
DEBIAN_OPEN_FILES = 1024


def debian_open_files() -> None:
    """A ``preexec_fn``: the child starts with Debian's default soft limit on open files."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > DEBIAN_OPEN_FILES:
        resource.setrlimit(resource.RLIMIT_NOFILE, (DEBIAN_OPEN_FILES, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PlatformProcess:
    home: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database_url(self) -> str:
        """The database the platform stores into: the one it was configured with, or its home's
        SQLite file."""
        return self.env.get("AGENTWHARF_DATABASE_URL") or f"sqlite:///{self.home / 'agentwharf.db'}"

    @property
    def token(self) -> str:
        """The admin token the platform's first start wrote into its home."""
        return (self.home / "admin.token").read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def run_dir(self) -> Path:
        """Where its workers' sockets and fetched model files are (``PlatformSettings.run_dir``)."""
        from agentwharf.settings import PlatformSettings

        return PlatformSettings(home=self.home).run_dir

    def client_env(self) -> dict[str, str]:
        """What a client process needs to reach this platform as its admin."""
        return {"AGENTWHARF_HOST": self.base_url, "AGENTWHARF_TOKEN": self.token,
                "MLFLOW_TRACKING_URI": self.base_url, "MLFLOW_TRACKING_TOKEN": self.token}

    def start(self, timeout: float = 180.0) -> PlatformProcess:
        log = open(self.home.parent / f"{self.home.name}-platform.out", "ab")
        command = [sys.executable, "-m", "agentwharf.cli.main", "up", "--home", str(self.home), "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env={**os.environ, **self.env},
                                        preexec_fn=debian_open_files)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"platform exited with {self.process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"platform did not answer within {timeout}s; see {log.name}")

    def stop(self, timeout: float = 60.0) -> int | None:
        return terminate(self.process, timeout)


def terminate(process: subprocess.Popen | None, timeout: float = 60.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if it never started)."""
    if process is None or process.poll() is not None:
        return None if process is None else process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def auth_headers() -> dict[str, str]:
    """Bearer header of the platform the test process currently points at (AGENTWHARF_TOKEN)."""
    return {"Authorization": f"Bearer {os.environ['AGENTWHARF_TOKEN']}"}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; /proc tells.
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@dataclass
class GatewayProcessRunner:
    """One ``agentwharf gateway`` process for the platform of ``home``."""

    home: Path
    control_url: str
    index: int
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> GatewayProcessRunner:
        return self.launch().wait_ready(timeout)

    def launch(self) -> GatewayProcessRunner:
        """Start the process without waiting for it (``wait_ready``), so several gateways and
        whatever else a fixture does start together."""
        log = open(self.home.parent / f"{self.home.name}-gateway-{self.index}.out", "ab")
        command = [sys.executable, "-m", "agentwharf.cli.main", "gateway", "--home", str(self.home), "--port", str(self.port),
                   "--index", str(self.index), "--control", self.control_url]
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env={**os.environ, **self.env},
                                        preexec_fn=debian_open_files)
        return self

    def wait_ready(self, timeout: float = 60.0) -> GatewayProcessRunner:
        wait_until(self._answers, timeout=timeout, interval=0.2, message=f"gateway {self.index} to answer")
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gateway {self.index} exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def health(self) -> dict:
        return httpx.get(f"{self.base_url}/healthz", timeout=5).json()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def stop(self, timeout: float = 60.0) -> None:
        terminate(self.process, timeout)
