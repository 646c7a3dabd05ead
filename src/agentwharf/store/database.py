"""Engine, sessions and migrations for agentwharf's tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, *, synchronous: str = "FULL", bulk: bool = False) -> Engine:
    """``synchronous=NORMAL`` is for writers whose data is also in a durable log (the spool
    writer): in WAL mode a crash never corrupts, at worst it loses the last commits, which the
    log replays. ``bulk`` sizes the page cache for a connection that inserts all day: MLflow's
    trace tables carry many indexes, and with SQLite's default 2 MB cache the writer spent
    most of its time re-reading and re-writing index pages."""
    if url.startswith("sqlite"):
        # MLflow's server and job runner write the same file from other processes: wait for
        # their locks instead of failing with "database is locked".
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            if bulk:
                cursor.execute("PRAGMA cache_size=-131072")  # 128 MiB
                cursor.execute("PRAGMA mmap_size=1073741824")
                cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.close()

        return engine
    # A database server that does not answer fails a connection in seconds, not minutes.
    return create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring agentwharf's tables to the newest revision; MLflow's tables are left to MLflow.

    A SQLite database is switched to write-ahead logging first: MLflow's server, the spool
    writer and the control plane write it from three processes, and WAL lets readers go on
    while one of them writes (and costs one fsync per commit instead of several).
    """
    if url.startswith("sqlite"):
        engine = make_engine(url)
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()
    command.upgrade(alembic_config(url), "head")


class Database:
    """Owns the engine and hands out short transactions."""

    def __init__(self, url: str, *, synchronous: str = "FULL", bulk: bool = False):
        self.url = url
        self.engine = make_engine(url, synchronous=synchronous, bulk=bulk)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
