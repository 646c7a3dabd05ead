"""``mlflow server``, ending as the uvicorn server it starts rather than beside it.

    python -m agentwharf.platform.mlflow_exec <mlflow server arguments>

MLflow's CLI prepares the stores, builds uvicorn's command line and environment, starts it as
a child and then only waits for it (or, with its job runner on, supervises that too). Without
the job runner the waiting process is ~250 MiB doing nothing, so here the CLI runs as it always
does up to that point and then runs that very uvicorn command line itself: same arguments, same
environment, one process fewer. It runs it in this process rather than ``exec``-ing it, because
a new interpreter would import MLflow's server a second time (~3-4 s of ``agentwharf up``).
With the job runner on, the platform runs plain ``mlflow server``.
"""

from __future__ import annotations

import os
import sys


def _serve_here(cmd, *, extra_env=None, **_ignored):
    """Stands in for the ``_exec_cmd`` call that starts uvicorn: run it in this process."""
    os.environ.update(extra_env or {})
    if list(cmd[1:3]) != ["-m", "uvicorn"]:  # not the command this was written for: start it as MLflow would
        os.execvpe(cmd[0], list(cmd), dict(os.environ))
    from uvicorn.main import main as uvicorn_main

    # MLflow's CLI goes on to wait for the child it thinks it started; there is none, so stop
    # here with uvicorn's own exit status.
    uvicorn_main.main(args=list(cmd[3:]), prog_name="uvicorn")


def main(argv: list[str] | None = None) -> None:
    import mlflow.server
    from mlflow.cli import cli

    mlflow.server._exec_cmd = _serve_here
    cli(["server", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
