"""Worker side of a warm spare: a worker process started before anyone needs it.

Most of a worker's start is importing MLflow (seconds); the model itself loads in about one.
A spare (``python -m agentwharf.serving.worker --spare``) does those imports ahead of need, with
the platform's base environment only, says so with ``READY_LINE`` on its standard output (a pipe
the launcher reads), then blocks on ONE JSON line on stdin, its assignment::

    {"argv": [worker arguments], "env": {the version's variables}, "log": "replica log path",
     "credential": "...", "secret": "..."}

and from then on runs exactly as a freshly started worker (``worker.main`` after its argument
parsing). It holds no credential and none of a version's variables before its assignment.
Only the standard library is imported here: the module runs in models' own environments too.
"""

from __future__ import annotations

import json
import os
import sys

#: What a spare writes on stdout once its imports are done (``spares.watch_until_ready``).
READY_LINE = b"agentwharf spare ready\n"


def _warm_up() -> None:
    """Do ahead of the assignment what every worker does before its first answer, whatever its
    model: import MLflow's pyfunc and artifacts (the bulk of a worker's start), its tracing and
    the span processor ``capture.install`` builds (it imports GitPython and OpenTelemetry's
    metrics), the event loop; map the installed packages as ``load_model`` will; collect and
    freeze. Sampled with py-spy, the last three were ~1 s of a spare's ~1.3 s from assignment
    to ready on this machine."""
    import mlflow.artifacts  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import mlflow.tracing.processor.mlflow_v3  # noqa: F401
    import mlflow.tracing.provider  # noqa: F401
    import mlflow.tracing.trace_manager  # noqa: F401
    from opentelemetry.sdk.trace.export import SpanExporter  # noqa: F401

    for optional in ("uvloop", "git"):  # git: MLflow's span processor reads the cwd's commit
        try:
            __import__(optional)
        except ImportError:
            pass
    _map_installed_packages()
    _freeze_imports()


def _map_installed_packages() -> None:
    """Let MLflow map this environment's modules to their packages now. ``load_model`` compares
    the model's requirements with what is installed, and to do so reads the metadata and file
    list of every installed distribution (most of a spare's time from assignment to ready).
    MLflow keeps the map for the process; the environment does not change once built, so the
    comparison, and its warning on a mismatch, stay MLflow's and the same."""
    try:
        from mlflow.utils.requirements_utils import _init_packages_to_modules_map

        _init_packages_to_modules_map()
    except Exception:  # noqa: BLE001 - a private helper of MLflow's: if it is gone or fails, the
        pass  # load maps (and reports) as it always did


def _freeze_imports() -> None:
    """Collect once and move what the imports made out of the collector's view: the worker's
    collection after its model loads (``worker._freeze_startup_objects``) then only walks the
    model's objects."""
    import gc

    gc.collect()
    gc.freeze()


def _write_to(log_path: str) -> None:
    """Send this process's stdout and stderr (and its children's) to the replica's log, as a
    fresh worker's are: the launcher has just written the run's start marker there."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def wait_for_assignment() -> tuple[list[str], tuple[str, str]]:
    """Warm up, announce readiness, wait for the assignment and take it on.

    Returns:
        The worker's arguments and its (load credential, TCP secret), as ``worker.main`` takes them.
    """
    _warm_up()
    os.write(1, READY_LINE)
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)  # stdin closed without an assignment: the platform no longer wants this spare
    assignment = json.loads(line)
    # Before anything reads them: MLflow reads its variables (experiment id, tracking token)
    # lazily, at load and at the first trace, never at import; ``spares.can_take_over`` keeps
    # variables read at interpreter start or at import (PYTHON*, LD_*, thread counts) off spares.
    os.environ.update(assignment["env"])
    _write_to(assignment["log"])
    return assignment["argv"], (assignment["credential"], assignment["secret"])
