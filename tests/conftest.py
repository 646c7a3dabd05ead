"""Hooks of the whole suite, loaded by pytest's main process as well as by each parallel test
process (pytest-xdist runs the tests in worker processes; only this file's hooks run in the one
that prints the summary)."""

from __future__ import annotations

import os

#: Where parallel test processes (pytest-xdist) leave their figures for the summary.
_FIGURES_FILE = "AGENTWHARF_TEST_FIGURES_FILE"


def pytest_configure(config):
    if not os.environ.get("PYTEST_XDIST_WORKER") and _FIGURES_FILE not in os.environ:
        import tempfile

        handle, path = tempfile.mkstemp(prefix="aw-test-figures-", suffix=".txt")
        os.close(handle)
        os.environ[_FIGURES_FILE] = path  # inherited by the workers, started after this


def pytest_sessionfinish(session):
    from tests.integration.load import FIGURES

    if os.environ.get("PYTEST_XDIST_WORKER") and FIGURES and os.environ.get(_FIGURES_FILE):
        with open(os.environ[_FIGURES_FILE], "a") as out:
            out.writelines(line + "\n" for line in FIGURES)


def pytest_terminal_summary(terminalreporter):
    """The fault scenarios' figures (requests sent, acknowledged, stored, 5xx), for the record:
    this process's, and those the parallel test processes left."""
    from pathlib import Path

    from tests.integration.load import FIGURES

    path = os.environ.get(_FIGURES_FILE)
    lines = list(FIGURES) + (Path(path).read_text().splitlines() if path and Path(path).exists() else [])
    if lines:
        terminalreporter.section("fault injection figures")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_unconfigure(config):
    path = os.environ.get(_FIGURES_FILE)
    if path and not os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.pop(_FIGURES_FILE, None)
        try:
            os.unlink(path)
        except OSError:
            pass
