"""Which Python a model version's workers run with: the model's own environment (built by
``env_build`` with uv, from the requirements MLflow logged with it) or, opted out, the
platform's own.

A worker in the model's environment imports agentwharf's worker runtime from the platform's
installation (a folder holding only a link to the ``agentwharf`` package, on ``PYTHONPATH``):
the same code as the gateway it talks to, and nothing else of the platform's packages. What the
runtime imports besides MLflow (``orjson``) is installed into every environment.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

import agentwharf
from agentwharf.errors import DeploymentFailed
from agentwharf.serving.env_build import RESULT_PREFIX, environment_name, ready_python

log = logging.getLogger("agentwharf.environments")

#: Environment managers a deploy may ask for.
MANAGERS = ("uv", "local")
#: How many of the builder's last lines a failure reports.
_TAIL_LINES = 60


@dataclass(frozen=True)
class Runtime:
    """What a version's workers are started with."""

    python: str
    #: The model's files, fetched by the builder (None: the worker fetches them itself).
    model_path: str | None = None
    #: The environment's name (None: the platform's own).
    environment: str | None = None
    reused: bool = False
    seconds: float = 0.0


PLATFORM_RUNTIME = Runtime(python=sys.executable)


class EnvironmentBuildFailed(DeploymentFailed):
    """The model's environment could not be built; the message is the installer's."""


class Environments:
    def __init__(self, envs_dir: Path, models_dir: Path, runtime_dir: Path, default_manager: str,
                 base_env: dict[str, str], load_credential: Callable[[str], str] | None = None, timeout: float = 1800.0,
                 env_files: Callable[[str], dict[str, bytes]] | None = None):
        self.envs_dir = envs_dir
        self.models_dir = models_dir
        self.runtime_dir = runtime_dir
        self.default_manager = default_manager
        self.base_env = base_env
        self.load_credential = load_credential
        #: A build that takes longer is stopped and the deploy fails.
        self.timeout = timeout
        #: model URI -> the files that decide its environment (``ENVIRONMENT_FILES``), read by
        #: the platform itself: enough to know an environment is built already.
        self.env_files = env_files
        #: Environment builds finished, by outcome (for /metrics).
        self.builds: dict[str, int] = {"built": 0, "reused": 0, "failed": 0}

    def remove_model_files(self, model_path: str | None = None) -> None:
        """Model files a build fetched (``model_path``, or all of them). The first start of a
        version loads them; its workers fetch their own once it is restarted or the platform
        is, so they are removed when the version stops for good, and all at a start (a killed
        platform's). Only ever inside ``models_dir``."""
        targets = [Path(model_path)] if model_path else list(self.models_dir.iterdir()) if self.models_dir.is_dir() else []
        for target in targets:
            if target.parent == self.models_dir:
                shutil.rmtree(target, ignore_errors=True)

    def manager(self, asked: str | None) -> str:
        return asked or self.default_manager

    def worker_pythonpath(self) -> str:
        """A folder with only ``agentwharf`` in it, for a worker in a model's environment."""
        link = self.runtime_dir / "agentwharf"
        package = Path(agentwharf.__file__).resolve().parent
        if not link.is_symlink() or link.resolve() != package:
            self.runtime_dir.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(package, target_is_directory=True)
        return str(self.runtime_dir)

    async def prepare(self, key: str, model_uri: str, manager: str | None, log_path: Path,
                      on_progress: Callable[[str], None] = lambda _: None) -> Runtime:
        """The runtime for one version: the platform's own, or its model's environment (built
        now, or reused).

        Raises:
            EnvironmentBuildFailed: the environment cannot be built (the installer's message).
        """
        if self.manager(manager) == "local":
            return PLATFORM_RUNTIME
        if (known := await self._known(model_uri)) is not None:
            # The common case (a new version, a restart, a second replica set): no builder
            # process; the workers fetch the model's files themselves.
            self.builds["reused"] += 1
            _append(log_path, f"reusing environment {known.environment} for {model_uri} (already built)")
            return known
        started = time.monotonic()
        try:
            lines = await asyncio.wait_for(self._run_builder(key, model_uri, log_path, on_progress), self.timeout)
        except asyncio.TimeoutError:
            self.builds["failed"] += 1
            raise EnvironmentBuildFailed(f"Building the environment of {model_uri} took longer than {self.timeout:.0f}s "
                                         f"(AGENTWHARF_ENVIRONMENT_BUILD_TIMEOUT); see {log_path}") from None
        result = next((line[len(RESULT_PREFIX):] for line in reversed(lines) if line.startswith(RESULT_PREFIX)), None)
        if result is None:
            self.builds["failed"] += 1
            tail = "\n".join(line for line in lines[-_TAIL_LINES:])
            raise EnvironmentBuildFailed(f"The environment of {model_uri} could not be prepared. Build log (tail):\n{tail}")
        built = orjson.loads(result)
        self.builds["reused" if built["reused"] else "built"] += 1
        log.info("%s runs in environment %s (%s in %.1fs)", key, built["environment"],
                 "reused" if built["reused"] else "built", time.monotonic() - started)
        return Runtime(python=built["python"], model_path=built["model_path"], environment=built["environment"],
                       reused=built["reused"], seconds=built["seconds"])

    async def _known(self, model_uri: str) -> Runtime | None:
        """The environment already built for ``model_uri``, or None when it is not, or when
        that cannot be told now (MLflow slow or failing, as right after a restart on a busy
        machine): the builder then decides, under the environment's lock. An error here must
        never end the version's start: nothing would start its workers, and requests would
        wait for them until they time out."""
        try:
            return await asyncio.to_thread(self._built_already, model_uri)
        except Exception as error:  # noqa: BLE001 - any failure only means "ask the builder"
            log.warning("cannot tell whether the environment of %s is built (%s: %s); the builder will check",
                        model_uri, type(error).__name__, error)
            return None

    def _built_already(self, model_uri: str) -> Runtime | None:
        if self.env_files is None:
            return None
        files = self.env_files(model_uri)
        if "MLmodel" not in files:
            return None
        with tempfile.TemporaryDirectory(prefix="agentwharf-env-") as folder:
            for name, data in files.items():
                (Path(folder) / name).write_bytes(data)
            try:
                _, _, name = environment_name(Path(folder))
            except Exception:  # the builder says what is wrong with the model's files
                return None
        python = ready_python(self.envs_dir, name)
        return Runtime(python=str(python), environment=name, reused=True) if python is not None else None

    async def _run_builder(self, key: str, model_uri: str, log_path: Path, on_progress: Callable[[str], None]) -> list[str]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentwharf.serving.env_build", "--model-uri", model_uri,
            "--models", str(self.models_dir), "--envs", str(self.envs_dir),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=self.base_env,
        )
        credential = self.load_credential(key) if self.load_credential is not None else ""
        process.stdin.write(credential.encode() + b"\n")
        process.stdin.close()
        lines: list[str] = []
        with open(log_path, "a") as build_log:
            build_log.write(f"\n--- preparing the environment of {model_uri} at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n")
            try:
                async for raw in process.stdout:
                    line = raw.decode(errors="replace").rstrip("\n")
                    build_log.write(line + "\n")
                    build_log.flush()
                    lines.append(line)
                    if not line.startswith(RESULT_PREFIX):
                        on_progress(line.partition(" ")[2] or line)
                await process.wait()
            finally:
                if process.returncode is None:  # the version was stopped while building
                    process.kill()
                    await process.wait()
        return lines


def _append(log_path: Path, line: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as build_log:
        build_log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
