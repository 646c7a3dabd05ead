"""The platform's handle on the writer process: start it, restart it if it dies, and on
shutdown let it drain the spool before it exits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from pathlib import Path

from agentwharf.children import die_with_parent, end_stale_process, open_log
from agentwharf.tracing.spool import SpoolReader, writer_lock_holder
from agentwharf.tracing.writer import read_progress

log = logging.getLogger("agentwharf.writer")


class WriterProcess:
    def __init__(self, database_uri: str, spool_dir: Path, log_path: Path, batch_size: int, max_payload_chars: int,
                 environ: dict[str, str], nice: int = 0, checkpoint_id: int = 1):
        self.nice = nice
        self.checkpoint_id = checkpoint_id
        self.database_uri = database_uri
        self.spool_dir = spool_dir
        self.log_path = log_path
        self.batch_size = batch_size
        self.max_payload_chars = max_payload_chars
        self.environ = environ
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.reader = SpoolReader(spool_dir)

    def end_stale_writer(self) -> None:
        """End a writer an earlier run of this home left behind (the platform was killed and
        the writer was stopped or hung): two writers must never drain one spool."""
        holder = writer_lock_holder(self.spool_dir)
        if holder is None or (self.process is not None and holder == self.process.pid):
            return
        if end_stale_process(holder, "agentwharf.tracing.writer"):
            log.warning("ended a stale spool writer (pid %d) left by an earlier run of this home", holder)

    def start(self) -> None:
        self.end_stale_writer()
        with open_log(self.log_path) as out:
            # The database URL goes on stdin: a command line is anyone's to read (``ps``).
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agentwharf.tracing.writer", "--spool", str(self.spool_dir),
                 "--batch-size", str(self.batch_size),
                 "--max-payload-chars", str(self.max_payload_chars), "--nice", str(self.nice),
                 "--checkpoint-id", str(self.checkpoint_id)],
                stdout=out, stderr=out, stdin=subprocess.PIPE, env=self.environ, preexec_fn=die_with_parent,
            )
        with contextlib.suppress(BrokenPipeError):  # it died at once: ensure_running restarts it
            self.process.stdin.write(self.database_uri.encode() + b"\n")
            self.process.stdin.close()

    def ensure_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            self.restarts += 1
            log.error("spool writer exited with %s; restarting", self.process.returncode)
            self.start()

    def backlog(self) -> tuple[int, float]:
        """(bytes spooled but not stored, age in seconds of the oldest such record)."""
        progress = read_progress(self.spool_dir) or {"segment": 0, "offset": 0}
        pending = self.reader.pending_bytes(progress["segment"], progress["offset"])
        if pending == 0:
            return 0, 0.0
        oldest = next(iter(self.reader.read(progress["segment"], progress["offset"], 1)), None)
        if oldest is None:
            return pending, 0.0
        import orjson

        ts_ms = orjson.loads(oldest.header).get("ts_ms", 0)
        return pending, max(0.0, time.time() - ts_ms / 1000)

    async def stop(self, timeout: float) -> None:
        """SIGTERM makes the writer drain what is spooled, then exit; wait for that."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process.poll() is None:
            log.error("spool writer did not drain within %.0fs; the rest stays spooled for the next start", timeout)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()
