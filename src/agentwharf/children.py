"""Child processes: they die with the platform, and their logs explain their failures.

If the platform is killed with SIGKILL it cannot stop its children. Linux can: a child that
sets PR_SET_PDEATHSIG gets SIGTERM when its parent dies, so no worker keeps serving a stale
model and no writer or MLflow server holds the database after the platform is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import BinaryIO

LOG_TAIL_BYTES = 4000
#: A child's log over this size when the child starts is moved aside first (to ``<name>.1``,
#: replacing the one before): as ``platform.log`` (``AGENTWHARF_LOG_MAX_BYTES``' default), a
#: platform that runs for months, restarting workers and scorers, never fills its disk with logs.
CHILD_LOG_MAX_BYTES = 50 * 1024 * 1024


def die_with_parent() -> None:
    """A ``preexec_fn`` for ``subprocess``: SIGTERM this child when its parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def open_log(path: Path | str, max_bytes: int = CHILD_LOG_MAX_BYTES) -> BinaryIO:
    """A child's log, opened to append to (its folder made if need be). One that has grown past
    ``max_bytes`` is kept as ``<name>.1`` and started again, so the current run's lines (what
    the logs routes and failure messages show) are all in the file itself."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_size > max_bytes:
            os.replace(path, path.with_name(path.name + ".1"))
    return open(path, "ab")


def log_tail(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The end of a child's log, to show whoever started it why it failed."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode(errors="replace").strip()
    except OSError:
        return ""


def end_stale_process(pid: int, marker: str, timeout: float = 10.0) -> bool:
    """Kill ``pid`` if it is still a process whose command line contains ``marker`` (an
    earlier run's child, stopped or hung, that outlived its parent). Returns whether it did.
    SIGCONT first: a stopped process dies of SIGKILL only once it runs."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    if marker not in command:
        return False
    for sig in (signal.SIGCONT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return True
