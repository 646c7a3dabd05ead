"""Build (or reuse) the Python environment a model version runs in: a process of its own.

    python -m agentwharf.serving.env_build --model-uri models:/m/1 --models DIR --envs DIR

It reads a short-lived, read-only credential on stdin, fetches the model into the platform's
model cache with it and drops it, then restores the environment MLflow recorded with the model
(``python_env.yaml``, ``requirements.txt``, ``conda.yaml``, a ``uv.lock``) with MLflow's own
virtualenv code and ``uv``, the way ``mlflow models serve --env-manager uv`` does, plus the few
packages the worker runtime needs. Environments are named by a hash of the Python version and
the requirements (MLflow's naming), so versions with the same requirements share one; a lock
per environment makes concurrent builds of the same one wait for each other.

Output goes to the build log; the last line is ``AGENTWHARF_RESULT <json>`` (python, model
path, environment, reused, seconds). On failure the log ends with the installer's own words
and the exit code is 2.

Why a process: the model is fetched with a credential that must not stay in the platform, and
installing requirements runs third-party build code that must not run inside it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT_PREFIX = "AGENTWHARF_RESULT "
READY_MARKER = ".agentwharf-ready"
#: The files of a model that decide its environment (MLflow reads these to restore it).
ENVIRONMENT_FILES = ("MLmodel", "python_env.yaml", "requirements.txt", "conda.yaml")
_MLFLOW_PIN = re.compile(r"\bmlflow(\[[^\]]*\])?\s*(==|>=|<=|~=|!=|<|>)")
#: What the worker runtime imports besides MLflow (which the model's requirements bring).
RUNTIME_REQUIREMENTS = ["orjson"]
#: Changes whenever the runtime's own requirements do, so environments built for an older
#: runtime are not reused.
RUNTIME_ID = "agentwharf-worker-runtime-1:" + ",".join(RUNTIME_REQUIREMENTS)


class BuildFailed(Exception):
    """The environment cannot be built; the message says why, in the installer's words."""


def say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def fetch_model(model_uri: str, models_dir: Path, token: str) -> Path:
    """The model's files in the platform's cache (fetched once per model version)."""
    import mlflow.artifacts

    models_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    try:
        target = models_dir / _cache_key(model_uri)
        if (target / READY_MARKER).exists():
            say(f"model files of {model_uri} already in the cache")
            return target
        say(f"fetching the model files of {model_uri}")
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=models_dir))
        mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(staging))
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    (staging / READY_MARKER).write_text(model_uri)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _cache_key(model_uri: str) -> str:
    """A name for the model's files that changes if the registered version is ever another
    model (a model deleted and registered again starts its versions at 1 again)."""
    from mlflow import MlflowClient

    identity = model_uri
    if model_uri.startswith("models:/") and model_uri.count("/") == 2:
        name, version = model_uri[len("models:/"):].split("/")
        found = MlflowClient().get_model_version(name, version)
        identity = f"{model_uri}|{found.source}|{found.creation_timestamp}"
    return hashlib.sha256(identity.encode()).hexdigest()[:24]


def _interpreter_for(version: str) -> str:
    """This machine's interpreter when the model wants this Python's major.minor (a model
    logged on 3.11.9 runs on 3.11.7), else the version as asked (uv looks for it)."""
    wanted = version.split(".")[:2]
    if wanted == [str(sys.version_info.major), str(sys.version_info.minor)]:
        return getattr(sys, "_base_executable", None) or sys.executable
    return version


def mlflow_constraint() -> str:
    """The model's environment gets the platform's MLflow minor version (an unpinned ``mlflow``
    resolves to it; a conflicting pin fails the build and says so)."""
    import mlflow

    major, minor = (int(part) for part in mlflow.__version__.split(".")[:2])
    return f"mlflow>={major}.{minor},<{major}.{minor + 1}"


def _installer_environment(constraint_file: Path) -> dict[str, str]:
    from uv import find_uv_bin

    uv_dir = str(Path(find_uv_bin()).parent)
    return {
        # MLflow runs ``uv`` by name.
        "PATH": os.pathsep.join([uv_dir, os.environ.get("PATH", "")]),
        "UV_CONSTRAINT": str(constraint_file),
        # Interpreters come from this machine, never from a download at deploy time.
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def environment_name(model_path: Path):
    """MLflow's description of the model's environment, the Python asked for, and the name of
    the environment that serves it (needs only ``ENVIRONMENT_FILES`` in ``model_path``)."""
    from mlflow.utils.virtualenv import _get_python_env, _get_virtualenv_name

    python_env = _get_python_env(model_path)
    wanted_python = python_env.python
    python_env.python = _interpreter_for(wanted_python)
    name = _get_virtualenv_name(python_env, model_path, env_id=f"{RUNTIME_ID};{mlflow_constraint()}")
    return python_env, wanted_python, name


def ready_python(envs_dir: Path, name: str) -> Path | None:
    """The python of a finished environment, or None."""
    return envs_dir / name / "bin" / "python" if (envs_dir / name / READY_MARKER).exists() else None


def build(model_path: Path, envs_dir: Path) -> tuple[Path, str, bool]:
    """The environment for the model at ``model_path``: (its python, its name, reused?)."""
    from mlflow.utils import env_manager
    from mlflow.utils.virtualenv import _create_virtualenv

    python_env, wanted_python, name = environment_name(model_path)
    constraint = mlflow_constraint()
    env_dir = envs_dir / name
    with _locked(envs_dir / f"{name}.lock"):
        if (env_dir / READY_MARKER).exists():
            say(f"reusing environment {name} (Python {wanted_python})")
            return env_dir / "bin" / "python", name, True
        shutil.rmtree(env_dir, ignore_errors=True)  # an earlier build that did not finish
        requirements = (model_path / "requirements.txt")
        listed = requirements.read_text().split() if requirements.exists() else python_env.dependencies
        say(f"creating environment {name} with uv: Python {wanted_python}, requirements {' '.join(listed)} "
            f"(constraint {constraint})")
        constraint_file = envs_dir / f"{name}.constraints.txt"
        constraint_file.write_text(constraint + "\n")
        extra_env = _installer_environment(constraint_file)
        os.environ.update(extra_env)  # the environment's creation command reads PATH from here
        try:
            _create_virtualenv(model_path, python_env, env_dir, env_manager=env_manager.UV, extra_env=extra_env,
                               capture_output=True, pip_requirements_override=RUNTIME_REQUIREMENTS)
        except Exception as error:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise BuildFailed(_explain(str(error), constraint)) from None
        _check_runtime(env_dir, constraint)
        (env_dir / READY_MARKER).write_text(json.dumps({"python": wanted_python, "requirements": listed}))
        return env_dir / "bin" / "python", name, False


def _explain(installer_output: str, constraint: str) -> str:
    hint = ""
    if _MLFLOW_PIN.search(installer_output):
        hint = (f"\nagentwharf's workers need {constraint} in the model's environment: log the model with an "
                "unpinned `mlflow` (or a pin in that range) in its pip_requirements.")
    return f"Building the model's environment failed. The installer said:\n{installer_output.strip()}{hint}"


def writing_bytecode(env) -> dict[str, str]:
    """``env`` for a process in an environment the platform built, with Python's bytecode cache
    written even where the platform's own environment says not to (``PYTHONDONTWRITEBYTECODE``,
    common in containers): the environment is the platform's, and without its cache every worker
    start compiles MLflow and pandas again (4.6 s of CPU to import them, 1.6 s with it, measured
    on 2 cores). The build's probe and the workers use it."""
    return {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _check_runtime(env_dir: Path, constraint: str) -> None:
    # Importing what a worker imports also compiles those modules once, here, rather than in
    # every first worker start (compiling every installed module up front costs far more).
    probe = subprocess.run([str(env_dir / "bin" / "python"), "-c",
                            "import mlflow, mlflow.pyfunc, mlflow.types.responses, orjson; print(mlflow.__version__)"],
                           capture_output=True, text=True, env=writing_bytecode(os.environ))
    if probe.returncode != 0:
        shutil.rmtree(env_dir, ignore_errors=True)
        raise BuildFailed(f"The model's environment cannot run agentwharf's worker ({constraint} and orjson):\n"
                          f"{probe.stderr.strip()[-3000:]}")
    say(f"environment ready: mlflow {probe.stdout.strip()}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="agentwharf model environment builder (started by the supervisor)")
    parser.add_argument("--model-uri", required=True)
    parser.add_argument("--models", required=True, type=Path)
    parser.add_argument("--envs", required=True, type=Path)
    args = parser.parse_args(argv)
    token = sys.stdin.readline().strip()
    started = time.monotonic()
    try:
        model_path = fetch_model(args.model_uri, args.models, token)
        del token
        python, name, reused = build(model_path, args.envs)
    except BuildFailed as failure:
        say(str(failure))
        sys.exit(2)
    except Exception as failure:  # MLflow refusing the model's environment files, say
        say(f"Preparing the model's environment failed: {type(failure).__name__}: {failure}")
        sys.exit(2)
    seconds = round(time.monotonic() - started, 2)
    say(f"done in {seconds}s")
    print(RESULT_PREFIX + json.dumps({"python": str(python), "model_path": str(model_path), "environment": name,
                                      "reused": reused, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
