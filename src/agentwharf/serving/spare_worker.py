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
    """Import what every worker imports before its model: MLflow's pyfunc and artifacts (the
    bulk of a worker's start), its tracing (``capture.install``), the event loop."""
    import mlflow.artifacts  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import mlflow.tracing.provider  # noqa: F401
    import mlflow.tracing.trace_manager  # noqa: F401
    from opentelemetry.sdk.trace.export import SpanExporter  # noqa: F401

    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass


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
