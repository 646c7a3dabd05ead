"""``mlflow server``, ending as the uvicorn server it starts rather than beside it.

    python -m agentwharf.platform.mlflow_exec <mlflow server arguments>

MLflow's CLI prepares the stores, builds uvicorn's command line and environment, starts it as
a child and then only waits for it (or, with its job runner on, supervises that too). Without
the job runner the waiting process is ~250 MiB doing nothing, so here the CLI runs as it always
does up to that point and then becomes uvicorn itself (``exec``): same pid, same command, same
environment, one process fewer. With the job runner on, the platform runs plain ``mlflow
server``.
"""

from __future__ import annotations

import os
import sys


def _become(cmd, *, extra_env=None, **_ignored):
    """Stands in for the ``_exec_cmd`` call that starts uvicorn: exec it instead."""
    os.execvpe(cmd[0], list(cmd), {**os.environ, **(extra_env or {})})


def main(argv: list[str] | None = None) -> None:
    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = _become
    cli(["server", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
