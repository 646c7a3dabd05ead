"""Where a served version's logs are, and reading them: ``logs`` and ``build_logs`` of the
serving endpoint API, the console's log tail.

Each worker process appends to ``<logs>/workers/<endpoint>/<entity>-<n>.log`` (the supervisor
opens it, the worker's stdout and stderr go to it), and every start begins with
``START_MARKER``. The current run is what follows the last marker; its load part (fetching and
loading the model) ends with the worker's ``ready on`` line. The version's environment is built
(or found already built) first, logged to ``<entity>-build.log``: the build log is that, then
the load part.
"""

from __future__ import annotations

import os
from pathlib import Path

START_MARKER = b"--- starting worker for "
#: The line ``serving.worker`` logs once the model is loaded and the worker listens.
READY_MARK = b"agentwharf.worker: ready on "
#: The most one answer carries per replica (Databricks' own answers are bounded too).
MAX_BYTES = 1024 * 1024
_CHUNK = 1024 * 1024


def environment_log_path(logs_dir: Path, endpoint: str, entity: str) -> Path:
    """Where the version's environment build logs (see ``serving.environments``)."""
    return logs_dir / "workers" / endpoint / f"{entity}-build.log"


def tail(path: Path, limit: int = MAX_BYTES) -> str:
    """The last ``limit`` bytes of a log ("" if it does not exist)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - limit))
            return handle.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def log_paths(logs_dir: Path, endpoint: str, entity: str) -> list[Path]:
    """The existing logs of the version's worker processes, by replica index."""
    folder = logs_dir / "workers" / endpoint
    found = []
    index = 0
    while (path := folder / f"{entity}-{index}.log").exists():
        found.append(path)
        index += 1
    return found


def _last_run_start(handle, size: int) -> int:
    """Offset of the last START_MARKER (0 if none), reading backwards a chunk at a time."""
    end = size
    while end > 0:
        start = max(0, end - _CHUNK)
        handle.seek(start)
        data = handle.read(end - start + len(START_MARKER))
        found = data.rfind(START_MARKER)
        if found >= 0:
            return start + found
        end = start
    return 0


def server_log(path: Path, limit: int = MAX_BYTES) -> str:
    """The current run's log (its last ``limit`` bytes)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = max(_last_run_start(handle, size), size - limit)
        handle.seek(start)
        return handle.read(size - start).decode(errors="replace")


def build_log(path: Path, limit: int = MAX_BYTES) -> str:
    """The current run's log up to and including its ``ready on`` line (all of it while the
    model is still loading, or when it failed to)."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        start = _last_run_start(handle, size)
        handle.seek(start)
        data = handle.read(min(size - start, limit))
    ready = data.find(READY_MARK)
    if ready >= 0:
        line_end = data.find(b"\n", ready)
        data = data[:line_end + 1 if line_end >= 0 else len(data)]
    return data.decode(errors="replace")


def join(parts: list[tuple[int, str]]) -> str:
    """One text for several replicas, each under its own heading when there is more than one."""
    if len(parts) == 1:
        return parts[0][1]
    return "".join(f"=== worker process {index} ===\n{text}\n" for index, text in parts)
