"""The platform's own log: ``<home>/logs/platform.log``, rotated, as text or JSON lines, with an
access line per request.

Access lines go through a buffer that is written out when it fills, when a line is a warning
or worse, and by the platform's monitor every quarter second: a request costs a record in a
list, not a write.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time

ACCESS_LOGGER = "agentwharf.access"
_BUFFERED_LINES = 1024


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and an access line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        if access := getattr(record, "access", None):
            line.update(access)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(path, *, json_lines: bool, max_bytes: int, backups: int, access: bool) -> None:
    """Send agentwharf's logs to ``path`` (rotated) and stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    formatter = JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    to_file = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups)
    to_stderr = logging.StreamHandler(sys.stderr)
    for handler in (to_file, to_stderr):
        handler.setFormatter(formatter)
    root = logging.getLogger("agentwharf")
    root.handlers[:] = [to_file, to_stderr]
    root.setLevel(logging.INFO)
    root.propagate = False
    access_log = logging.getLogger(ACCESS_LOGGER)
    access_log.propagate = False
    access_log.disabled = not access
    access_log.handlers[:] = [logging.handlers.MemoryHandler(_BUFFERED_LINES, flushLevel=logging.WARNING, target=to_file)]


def flush_access_log() -> None:
    for handler in logging.getLogger(ACCESS_LOGGER).handlers:
        handler.flush()


def access_line(method: str, path: str, status: int, seconds: float, request_id: str, caller: str | None) -> None:
    """One line for one answered request."""
    log = logging.getLogger(ACCESS_LOGGER)
    if log.disabled:
        return
    milliseconds = round(seconds * 1000, 2)
    log.info("%s %s %d %.2fms request=%s caller=%s", method, path, status, milliseconds, request_id, caller or "-",
             extra={"access": {"method": method, "path": path, "status": status, "duration_ms": milliseconds,
                               "request_id": request_id, "caller": caller}})
