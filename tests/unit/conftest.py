"""Fixtures shared by the unit tests: a migrated agentwharf database, one file per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agentwharf.store.database import Database, migrate


@pytest.fixture(scope="session")
def migrated(tmp_path_factory):
    """One migrated database file, copied for each test (migrating takes a tenth of a second)."""
    path = tmp_path_factory.mktemp("template") / "agentwharf.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(tmp_path, migrated):
    path = tmp_path / "agentwharf.db"
    shutil.copyfile(migrated, path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def run_dir():
    """A folder for worker sockets (a Unix socket path must be short: not pytest's tmp_path)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="aw-sup-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
