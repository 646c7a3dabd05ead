"""Venvs for Databricks' client packages, built on first use and reused while their pins hold.

Each client gets a venv of its own: their dependencies conflict with the platform's and with
each other's (databricks-openai alone needs numpy<2 through databricks-connect). They are built
with ``uv`` (a dependency of the platform's, which builds model environments with it): pip took
about three minutes for the databricks-agents venv alone, uv seconds. Parallel test processes
that want the same venv build it once (a lock beside it)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from uv import find_uv_bin

ROOT = Path(__file__).resolve().parents[2]
#: databricks-sdk as shared/reference/databricks-clients.md pins it, for `.venv-databricks`.
SDK_PACKAGES = ["databricks-sdk==0.156.0", "openai>=1.60,<4", "httpx>=0.27,<1"]


def client_venv(name: str, packages: list[str], constraints: Path | None = None) -> Path:
    """The python of ``<repo>/<name>`` with exactly ``packages`` (and ``constraints``) installed."""
    venv = ROOT / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = "\n".join(packages) + ("\n" + constraints.read_text() if constraints else "")
    with open(ROOT / f"{name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists() or stamp.read_text() != wanted:
            uv, env = find_uv_bin(), {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
            # --seed: pip in the venv too, as `python -m venv` gave (MLflow's client asks for its version).
            subprocess.run([uv, "venv", "--quiet", "--clear", "--seed", "--python", sys.executable, str(venv)],
                           check=True, env=env)
            pins = ["--constraint", str(constraints)] if constraints else []
            subprocess.run([uv, "pip", "install", "--quiet", "--python", str(python), *pins, *packages],
                           check=True, env=env)
            stamp.write_text(wanted)
    return python
