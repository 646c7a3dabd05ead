"""The spool writer: a process of its own that drains the spool into the database in batches.

It runs apart from the gateway so its inserts never compete with serving for the GIL. Each
batch is one transaction: MLflow's trace rows, the inference rows and the new checkpoint. Every
insert ignores rows that already exist (keyed by trace id and request id), so replaying a batch
after a crash stores each request exactly once. The inserts themselves are ``bulk``'s, in each
database's fastest form.

A value that would make the database refuse the whole batch is made to fit before it is sent:
text longer than its column (PostgreSQL enforces ``VARCHAR(n)``, SQLite does not) is cut to the
column's length, and NUL characters (which PostgreSQL's text types cannot hold) are dropped. A
batch the database refuses is retried forever, so one such value would otherwise stop the
writer; both rules apply on every database, so a trace reads the same whichever stores it.

    python -m agentwharf.tracing.writer --spool DIR [--database URL]

Without ``--database`` the URL is the first line of standard input: that is how the platform
starts it, since a command line is visible to every user of the machine and the URL may carry
the database's password.

A trace stored in an experiment that has active online scorers (MLflow's
``online_scoring_configs`` with a sample rate above 0, re-read before each batch: a trace
answered after ``Scorer.start()`` returned is queued) also gets a row in ``aw_scoring_queue``,
in the same transaction: that is how the scoring process learns, within a poll, which traces
just landed (``agentwharf.quality``). Without scorers it costs one small query a batch.

"""

from __future__ import annotations

import argparse
import logging
import operator
import os
import signal
import sys
import time
from pathlib import Path

import orjson
from sqlalchemy import String, inspect, text
from sqlalchemy.exc import DataError, IntegrityError

from agentwharf.store.database import Database
from agentwharf.store.models import InferenceLog, ScoringQueue, SpoolCheckpoint
from agentwharf.tracing.bulk import TableRows, inserter_for
from agentwharf.tracing.rows import inference_row, trace_rows
from agentwharf.tracing.spool import SpoolReader, hold_writer_lock, list_segments

log = logging.getLogger("agentwharf.writer")
PROGRESS_FILE = "progress.json"
#: Records the database refused even alone, with the reason, in the spool folder (see ``_store_alone``).
REFUSED_FILE = "refused.jsonl"


def _record_errors() -> tuple[type[Exception], ...]:
    """The database refusing what a batch holds, rather than being away or busy: SQLAlchemy's
    and, as the bulk inserters use the driver directly, each driver's own."""
    import sqlite3

    errors: list[type[Exception]] = [IntegrityError, DataError, sqlite3.IntegrityError, sqlite3.DataError]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        errors += [psycopg.IntegrityError, psycopg.DataError]
    return tuple(errors)


_RECORD_ERRORS = _record_errors()


#: Record part -> the table its rows go to. MLflow's trace tables by name (what MLflow's
#: migrations created in this database; ``rows.py`` builds their rows): naming them costs this
#: process nothing, where importing MLflow's table models would load MLflow (~130 MiB).
TABLES = {
    "trace_info": "trace_info",
    "trace_tags": "trace_tags",
    "trace_request_metadata": "trace_request_metadata",
    "spans": "spans",
    "inference": InferenceLog.__tablename__,
    "scoring": ScoringQueue.__tablename__,
}
_MONITORED = text("SELECT DISTINCT experiment_id FROM online_scoring_configs WHERE sample_rate > 0")


#: A batch stops at this many spooled bytes even short of ``batch_size`` records: records hold
#: up to a few MB each, and a batch is held in memory twice (records, then rows).
MAX_BATCH_BYTES = 64 * 1024 * 1024
#: A spooled record holding a NUL character: JSON can only carry one escaped, as this. A batch
#: without it skips the NUL check of every text value (see ``fitted``).
_ESCAPED_NUL = b"\\u0000"


class SpoolWriter:
    def __init__(self, database_url: str, spool_dir: Path, *, batch_size: int = 5000, max_payload_chars: int = 1_000_000,
                 max_batch_bytes: int = MAX_BATCH_BYTES, checkpoint_id: int = 1):
        #: Which checkpoint row is this spool's: the platform's is 1, gateway process N's is
        #: 1 + N (each gateway has a spool of its own, drained by a writer of its own).
        self.checkpoint_id = checkpoint_id
        self.db = Database(database_url, synchronous="NORMAL", bulk=True)
        self.spool_dir = spool_dir
        self.reader = SpoolReader(spool_dir)
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.max_payload_chars = max_payload_chars
        self.tables = TABLES
        self.inserter = inserter_for(self.db.engine.dialect.name)
        self._artifact_locations: dict[str, str | None] = {}
        #: table -> {text column: its length, or None for unbounded text}, read from the database.
        self._text_columns: dict[str, dict[str, int | None]] = {}
        self._checkpoint: tuple[int, int] | None = None
        self.written = 0

    def _text_columns_of(self, session, table: str) -> dict[str, int | None]:
        """The table's text columns and their lengths, as the database declares them (MLflow's
        tables included: their schema is MLflow's, so it is read, not restated here)."""
        if table not in self._text_columns:
            columns = inspect(session.connection()).get_columns(table)
            self._text_columns[table] = {c["name"]: c["type"].length for c in columns if isinstance(c["type"], String)}
        return self._text_columns[table]

    def _table_rows(self, session, table: str, rows: list[dict], nul_free: bool) -> TableRows:
        """A table's rows as tuples, made storable (``fitted``). ``nul_free``: no value can hold
        a NUL character (see ``_ESCAPED_NUL``), so only the bounded columns need a look."""
        columns = list(rows[0])
        text_columns = self._text_columns_of(session, table)
        values = operator.itemgetter(*columns)  # a row's values in column order, in C
        tuples = [values(row) for row in rows]
        if nul_free:
            return table, columns, fit_lengths(tuples, [(i, text_columns[c]) for i, c in enumerate(columns)
                                                        if text_columns.get(c) is not None])
        checks = [(i, text_columns[c]) for i, c in enumerate(columns) if c in text_columns]
        return table, columns, [fitted(list(row), checks) for row in tuples]

    def checkpoint(self) -> tuple[int, int]:
        """Where the last committed batch ended. Read from the database once; after that this
        process is the checkpoint's only writer, so it keeps it in memory."""
        if self._checkpoint is None:
            with self.db.session() as session:
                row = session.get(SpoolCheckpoint, self.checkpoint_id)
                self._checkpoint = (row.segment, row.offset) if row else (0, 0)
        return self._checkpoint

    def _artifact_location(self, session, experiment_id: str) -> str | None:
        if experiment_id not in self._artifact_locations:
            self._artifact_locations[experiment_id] = session.execute(
                text("SELECT artifact_location FROM experiments WHERE experiment_id = :id"), {"id": int(experiment_id)}
            ).scalar()
        return self._artifact_locations[experiment_id]

    def monitored_experiments(self) -> frozenset[str]:
        """Experiments whose traces online scoring wants (read in a transaction of its own: a
        failed read must not abort the batch's on PostgreSQL)."""
        try:
            with self.db.session() as session:
                return frozenset(str(row[0]) for row in session.execute(_MONITORED))
        except Exception:  # an MLflow schema without online scoring: nothing to queue
            log.debug("could not read online_scoring_configs", exc_info=True)
            return frozenset()

    def run_once(self) -> int:
        """Write one batch. Returns how many records it took from the spool.

        A batch the database refuses for what it holds (a constraint, a value it cannot take:
        the same batch would fail the same way forever, and every later record wait behind it)
        is stored again record by record, so one bad record costs only itself (``_store_alone``).
        An unreachable or locked database raises: the batch is tried again as it is."""
        segment, offset = self.checkpoint()
        batch = self._read_batch(segment, offset)
        if not batch:
            self._delete_consumed(segment)
            return 0
        try:
            self._store(batch)
        except _RECORD_ERRORS:
            log.exception("the database refused a batch of %d records; storing them one by one", len(batch))
            for item in batch:
                self._store_alone(item)
        return len(batch)

    def _store(self, batch: list, traces: bool = True) -> None:
        """The batch's rows and the checkpoint past it, in one transaction; ``traces`` False:
        the inference rows alone."""
        nul_free = not any(_ESCAPED_NUL in item.record or _ESCAPED_NUL in item.header for item in batch)
        rows: dict[str, list[dict]] = {name: [] for name in self.tables}
        monitored = self.monitored_experiments() if traces else frozenset()
        stored_ms = int(time.time() * 1000)
        with self.db.session() as session:
            for item in batch:
                header = orjson.loads(item.header)
                record = orjson.loads(item.record)
                rows["inference"].append(inference_row(header, record, self.max_payload_chars))
                if traces and header.get("experiment_id"):
                    for name, values in trace_rows(header, record, self._artifact_location(session, header["experiment_id"])).items():
                        rows[name].extend(values)
                    if str(header["experiment_id"]) in monitored:
                        rows["scoring"].append(scoring_row(header, record, stored_ms))
            # trace_info first: the other trace tables (and the scoring queue's reader) reference it.
            self.inserter.insert(session.connection().connection, [
                self._table_rows(session, self.tables[name], rows[name], nul_free)
                for name in ("trace_info", "trace_tags", "trace_request_metadata", "spans", "inference", "scoring") if rows[name]])
            self._checkpoint_past(session, batch[-1])
        self._stored(batch)

    def _checkpoint_past(self, session, last) -> None:
        checkpoint = session.get(SpoolCheckpoint, self.checkpoint_id)
        if checkpoint is None:
            session.add(SpoolCheckpoint(id=self.checkpoint_id, segment=last.segment, offset=last.end_offset))
        else:
            checkpoint.segment, checkpoint.offset = last.segment, last.end_offset

    def _stored(self, batch: list) -> None:
        last = batch[-1]
        self._checkpoint = (last.segment, last.end_offset)
        self.written += len(batch)
        self._write_progress(last.segment, last.end_offset, orjson.loads(last.header).get("ts_ms", 0))
        self._delete_consumed(last.segment)

    def _store_alone(self, item) -> None:
        """One record of a refused batch: whole if it can be; else its inference row without the
        trace (say, its experiment was deleted for good meanwhile); else it is kept in the
        spool folder's ``refused.jsonl`` with the reason, never dropped, and the writer moves on."""
        try:
            self._store([item])
            return
        except _RECORD_ERRORS as error:
            trace_error = error
        request_id = orjson.loads(item.header).get("request_id")
        try:
            self._store([item], traces=False)
            log.error("request %s: the database refused its trace (%s); its inference row is stored without it",
                      request_id, _reason(trace_error))
            return
        except _RECORD_ERRORS as error:
            row_error = error
        log.error("request %s: the database refused its record (%s); kept in %s", request_id, _reason(row_error),
                  self.spool_dir / REFUSED_FILE)
        with open(self.spool_dir / REFUSED_FILE, "ab") as refused:
            refused.write(orjson.dumps({"reason": _reason(row_error), "header": orjson.loads(item.header),
                                        "record": orjson.loads(item.record)}) + b"\n")
            refused.flush()
            os.fsync(refused.fileno())
        with self.db.session() as session:
            self._checkpoint_past(session, item)
        self._stored([item])

    def _delete_consumed(self, segment: int) -> None:
        """Delete the spool's segments before ``segment``, once what they held is durable.

        With ``synchronous=NORMAL`` a SQLite commit is in the WAL file but not yet synced: a
        killed process loses nothing (the OS has it), a power cut may lose the last commits,
        checkpoint row included, and the writer would then resume inside a segment deleted
        already. So the database's files are synced first. Segments end rarely (every
        ``spool_segment_bytes``, or a gateway restart), so this costs next to nothing."""
        if not any(seq < segment for seq in list_segments(self.spool_dir)):
            return
        if self.db.engine.dialect.name == "sqlite":
            sync_files(self.db.engine.url.database, self.db.engine.url.database + "-wal")
        self.reader.delete_before(segment)

    def _read_batch(self, segment: int, offset: int) -> list:
        """Up to ``batch_size`` records after the checkpoint, stopping past ``max_batch_bytes``."""
        batch, size = [], 0
        for item in self.reader.read(segment, offset, self.batch_size):
            batch.append(item)
            size += len(item.record) + len(item.header)
            if size >= self.max_batch_bytes:
                break
        return batch

    def _write_progress(self, segment: int, offset: int, last_ts_ms: int) -> None:
        # For the platform's metrics: how far the store is, without asking the database.
        temp = self.spool_dir / (PROGRESS_FILE + ".tmp")
        temp.write_bytes(orjson.dumps({"segment": segment, "offset": offset, "last_ts_ms": last_ts_ms,
                                       "written": self.written, "at": time.time()}))
        os.replace(temp, self.spool_dir / PROGRESS_FILE)

    def run(self, stop: list[bool], interval: float, idle_interval: float = 0.5) -> None:
        segment, offset = self.checkpoint()
        self._write_progress(segment, offset, 0)
        pause = interval
        while True:
            try:
                taken = self.run_once()
            except Exception:
                log.exception("writing a batch failed; retrying")
                time.sleep(1.0)
                continue
            if taken:
                pause = interval
                continue
            if stop:
                return  # drained: every spooled record is in the store
            # Idle: poll less and less often (up to idle_interval), so an idle platform costs
            # next to nothing; the first record after a pause is picked up within it.
            time.sleep(pause)
            pause = min(pause * 2, idle_interval)


def fitted(values: list, checks: list[tuple[int, int | None]]) -> tuple:
    """One row's values, each text value at ``checks`` (index, column length) made storable:
    NUL characters dropped, cut to the column's length. See the module docstring for why."""
    for index, limit in checks:
        value = values[index]
        if value.__class__ is str:
            if "\x00" in value:
                value = value.replace("\x00", "")
            if limit is not None and len(value) > limit:
                value = value[:limit]
            values[index] = value
    return tuple(values)


def fit_lengths(rows: list[tuple], checks: list[tuple[int, int]]) -> list[tuple]:
    """``rows`` with the rare row holding text longer than its column (``checks``: index,
    length) replaced by its ``fitted`` copy; checked a column at a time, which is cheaper
    than a call per row when nothing needs fitting."""
    over = {j for i, limit in checks for j, row in enumerate(rows)
            if (value := row[i]).__class__ is str and len(value) > limit}
    for j in over:
        rows[j] = fitted(list(rows[j]), checks)
    return rows


def scoring_row(header: dict, record: dict, stored_ms: int) -> dict:
    """The scoring queue's row for a trace just stored (see ``ScoringQueue``)."""
    return {"trace_id": record["trace_id"], "experiment_id": str(header["experiment_id"]), "endpoint": header["endpoint"],
            "served_entity": header.get("entity"), "answered_ms": header["ts_ms"], "stored_ms": stored_ms}


def sync_files(*paths: str) -> None:
    """fsync each file that exists (a read-only descriptor is enough on Linux)."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_progress(spool_dir: Path) -> dict | None:
    try:
        return orjson.loads((spool_dir / PROGRESS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="agentwharf spool writer (started by the platform)")
    parser.add_argument("--spool", required=True, type=Path)
    parser.add_argument("--database", help="the database's URL (default: read from the first line of stdin)")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--max-payload-chars", type=int, default=1_000_000)
    parser.add_argument("--nice", type=int, default=0, help="Lower this process's CPU priority by this much")
    parser.add_argument("--checkpoint-id", type=int, default=1, help="This spool's checkpoint row (1: the platform's)")
    args = parser.parse_args(argv)
    database = args.database or sys.stdin.readline().strip()
    if args.nice:
        # Serving comes first: under load the writer takes the CPU that answering requests
        # leaves, and catches up when the load eases. The spool holds the difference.
        os.nice(args.nice)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop: list[bool] = []
    # SIGTERM: finish draining what is spooled, then exit (the platform waits for it).
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    # One writer per spool: a writer an earlier run left behind holds this until it is ended.
    hold_writer_lock(args.spool)
    writer = SpoolWriter(database, args.spool, batch_size=args.batch_size, max_payload_chars=args.max_payload_chars,
                         checkpoint_id=args.checkpoint_id)
    import gc

    gc.freeze()  # as in the platform process: start-up objects stay out of full collections
    log.info("draining %s into the store from checkpoint %s", args.spool, writer.checkpoint())
    writer.run(stop, args.interval)
    log.info("spool drained (%d records written), exiting", writer.written)


if __name__ == "__main__":
    main()


def _reason(error: Exception) -> str:
    """The database's own words, first line (no statement, no parameters: they hold payloads)."""
    original = getattr(error, "orig", None) or error
    return str(original).splitlines()[0][:300]
