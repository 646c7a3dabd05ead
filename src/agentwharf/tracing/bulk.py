"""Bulk inserts that store each row once, in the fastest form each database offers.

The spool writer stores ~25 rows per request (trace info, tags, metadata, spans, the inference
row) in one transaction per batch, and must be idempotent: a batch replayed after a crash
stores nothing twice. Rows go to the DBAPI driver directly rather than through SQLAlchemy's
per-row processing, which cost more than the inserts themselves at serving rates.

- SQLite: ``INSERT ... ON CONFLICT DO NOTHING`` through ``executemany``: in-process, a prepared
  statement run once per row is as fast as SQLite goes. Not ``INSERT OR IGNORE``: that also
  skips, without a word, a row that breaks a NOT NULL or CHECK constraint, so such a batch would
  be "stored" with rows missing; this way it fails, and the writer stores what it can of each
  record and keeps the rest in ``refused.jsonl``.
- PostgreSQL: ``COPY`` straight into each table, inside a savepoint. A batch only ever meets
  rows stored before when it is replayed after a crash (the spool has one writer, and a batch's
  rows commit together), so the usual case pays for no conflict handling at all. When a ``COPY``
  does meet a stored row, the savepoint is rolled back and that batch goes the careful way:
  ``COPY`` into a temporary table, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.

Measured on 10,000 EchoAgent records (``benchmarks/writer_throughput.py``), against
PostgreSQL with fsync on: ``executemany`` (psycopg pipelines it) ~900 traces/s; multi-row
``INSERT ... VALUES`` ~700 (psycopg parses every placeholder of a long statement in Python);
``COPY`` + ``INSERT ... SELECT ... ON CONFLICT`` ~1,100; ``COPY`` straight in ~1,600. What is
left is PostgreSQL's own work: MLflow's indexes and the foreign-key check of every tag,
metadata and span row.
"""

from __future__ import annotations

from collections.abc import Sequence

#: One table's part of a batch: (table, column names, rows as tuples in that order).
TableRows = tuple[str, Sequence[str], list[tuple]]


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f'"{name}"' for name in names)


class SqliteInserter:
    def __init__(self):
        self._sql: dict[tuple, str] = {}

    def insert(self, connection, batch: list[TableRows]) -> None:
        """Insert every table's rows, skipping rows already stored.

        Args:
            connection: the DBAPI connection, inside the batch's transaction.
            batch: the tables in insertion order (a table before those that refer to it).
        """
        cursor = connection.cursor()
        try:
            for table, columns, rows in batch:
                cursor.executemany(self._statement(table, columns), rows)
        finally:
            cursor.close()

    def _statement(self, table: str, columns: Sequence[str]) -> str:
        key = (table, tuple(columns))
        if key not in self._sql:
            self._sql[key] = (f'INSERT INTO "{table}" ({_quoted(columns)}) VALUES ({", ".join("?" * len(columns))}) '
                              "ON CONFLICT DO NOTHING")
        return self._sql[key]


class PostgresInserter:
    def __init__(self):
        #: Batches that met rows stored before and took the careful way.
        self.replays = 0

    def insert(self, connection, batch: list[TableRows]) -> None:
        """As ``SqliteInserter.insert``; ``connection`` is SQLAlchemy's pooled psycopg one."""
        from psycopg.errors import UniqueViolation

        driver = connection.driver_connection
        try:
            with driver.transaction(), driver.cursor() as cursor:  # a savepoint: the batch's transaction is open
                for table, columns, rows in batch:
                    _copy(cursor, table, columns, rows)
        except UniqueViolation:
            self.replays += 1
            with driver.cursor() as cursor:
                for table, columns, rows in batch:
                    self._insert_skipping_stored(cursor, table, columns, rows)

    @staticmethod
    def _insert_skipping_stored(cursor, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
        stage, names = f"_aw_stage_{table}", _quoted(columns)
        # The stage has the target's column types and nothing else (no keys, no constraints);
        # it empties itself at commit.
        cursor.execute(f'CREATE TEMP TABLE IF NOT EXISTS "{stage}" ON COMMIT DELETE ROWS AS '
                       f'SELECT {names} FROM "{table}" WITH NO DATA')
        cursor.execute(f'TRUNCATE "{stage}"')
        _copy(cursor, stage, columns, rows)
        cursor.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM "{stage}" ON CONFLICT DO NOTHING')


def _copy(cursor, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    with cursor.copy(f'COPY "{table}" ({_quoted(columns)}) FROM STDIN') as copy:
        for row in rows:
            copy.write_row(row)


def inserter_for(dialect: str) -> SqliteInserter | PostgresInserter:
    """The inserter for a SQLAlchemy dialect name.

    Raises:
        ValueError: a database the writer was not built for.
    """
    if dialect == "sqlite":
        return SqliteInserter()
    if dialect == "postgresql":
        return PostgresInserter()
    raise ValueError(f"The spool writer stores into SQLite or PostgreSQL, not {dialect}")
