"""Child processes die with the platform.

If the platform is killed with SIGKILL it cannot stop its children. Linux can: a child that
sets PR_SET_PDEATHSIG gets SIGTERM when its parent dies, so no worker keeps serving a stale
model and no writer or MLflow server holds the database after the platform is gone.
"""

from __future__ import annotations

import contextlib
import signal
import sys


def die_with_parent() -> None:
    """A ``preexec_fn`` for ``subprocess``: SIGTERM this child when its parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
