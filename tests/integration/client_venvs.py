"""Venvs for Databricks' client packages, built on first use and reused while their pins hold.

Each client gets a venv of its own: their dependencies conflict with the platform's and with
each other's (databricks-openai alone needs numpy<2 through databricks-connect)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: databricks-sdk as shared/reference/databricks-clients.md pins it, for `.venv-databricks`.
SDK_PACKAGES = ["databricks-sdk==0.156.0", "openai>=1.60,<4", "httpx>=0.27,<1"]


def client_venv(name: str, packages: list[str], constraints: Path | None = None) -> Path:
    """The python of ``<repo>/<name>`` with exactly ``packages`` (and ``constraints``) installed."""
    venv = ROOT / name
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    wanted = "\n".join(packages) + ("\n" + constraints.read_text() if constraints else "")
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pins = ["-c", str(constraints)] if constraints else []
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *pins, *packages], check=True)
        stamp.write_text(wanted)
    return python
