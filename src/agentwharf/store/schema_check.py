"""Whether a home's database already has agentwharf's newest tables, asked without Alembic.

``agentwharf up`` must run agentwharf's migrations before MLflow's server opens the same SQLite
file (SQLite serialises writers, and switching a file to WAL needs it alone). Importing Alembic
and SQLAlchemy to find that nothing is to be done took ~0.5-0.8 s before MLflow's server could
even be launched, on every start of a home that was migrated long ago. This answers the same
question with the standard library: the newest revision is the one in ``migrations/versions``
that no other revision follows, and the database says which one it has. Anything unexpected
(no file yet, another database kind, an unreadable table, two heads) answers "not current",
and ``up`` migrates first as it always did.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from urllib.parse import quote

MIGRATIONS_DIR = Path(__file__).parent / "migrations" / "versions"
VERSION_TABLE = "aw_alembic_version"  # where Alembic keeps agentwharf's revision (migrations/env.py)

_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*['\"]([^'\"]*)['\"]", re.MULTILINE)


def head_revision(folder: Path = MIGRATIONS_DIR) -> str | None:
    """The one revision no other revision names as its parent; None when that is not one."""
    revisions, parents = set(), set()
    for script in folder.glob("*.py"):
        for kind, value in _REVISION.findall(script.read_text(encoding="utf-8")):
            (revisions if kind == "revision" else parents).add(value)
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def sqlite_schema_is_current(database_uri: str) -> bool:
    """True when ``database_uri`` is a SQLite file already in WAL mode and at the newest
    revision: migrating it would change nothing."""
    prefix = "sqlite:///"
    path = database_uri[len(prefix):] if database_uri.startswith(prefix) else ""
    head = head_revision()
    if not path or head is None or not Path(path).is_file():
        return False
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
        versions = [row[0] for row in connection.execute(f"SELECT version_num FROM {VERSION_TABLE}")]
    except sqlite3.Error:
        return False
    finally:
        connection.close()
    return journal.lower() == "wal" and versions == [head]
