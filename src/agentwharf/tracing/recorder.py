"""Gateway side of durable tracing: spool each request's record before its answer goes out,
and refuse new work rather than lose records: 503 + Retry-After when the writer falls behind,
507 when the disk under the spool is nearly full (an operator must act)."""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any

import orjson

from agentwharf.errors import InsufficientStorage, Unavailable
from agentwharf.tracing import record as trace_record
from agentwharf.tracing.spool import SpoolAppender, encode_record

log = logging.getLogger("agentwharf.recorder")


class SpoolFull(Unavailable):
    """Back-pressure: the request is refused before any work, so it has nothing to record."""


class DiskFull(InsufficientStorage):
    """The disk under the spool is (nearly) full: refused before any work, nothing to record."""


def free_bytes(folder) -> int:
    """Bytes free for this user on the file system holding ``folder``."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


class Recorder:
    def __init__(self, appender: SpoolAppender, max_pending_bytes: int, min_free_bytes: int = 0):
        self.appender = appender
        self.max_pending_bytes = max_pending_bytes
        #: Requests are refused while less than this is free on the spool's disk, so the spool,
        #: the database and MLflow never meet a full disk mid-write.
        self.min_free_bytes = min_free_bytes
        #: As of the monitor's last look (statvfs once every 0.25 s, not per request).
        self.free_bytes: int | None = None
        #: Bytes spooled but not yet in the store, as of the monitor's last look...
        self.pending_bytes = 0
        #: ...plus what was appended since, so a burst cannot overshoot between two looks.
        self._appended_at_last_look = 0
        self.lag_seconds = 0.0
        self.rejected = 0

    def observe(self, pending_bytes: int, lag_seconds: float, free: int | None = None) -> None:
        """Called by the platform's monitor with what the writer has not stored yet and how
        much disk is free."""
        self.pending_bytes = pending_bytes
        self.lag_seconds = lag_seconds
        self.free_bytes = free
        self._appended_at_last_look = self.appender.appended_bytes

    def pending_estimate(self) -> int:
        return self.pending_bytes + (self.appender.appended_bytes - self._appended_at_last_look)

    def has_room(self) -> bool:
        """Whether a request would be taken now (``check_capacity`` passes), without counting a
        refusal: for work nobody waits for (a shadow copy), which is dropped instead."""
        return (self.free_bytes is None or self.free_bytes >= self.min_free_bytes) and \
            self.pending_estimate() <= self.max_pending_bytes

    def check_capacity(self) -> None:
        """Raises:
            SpoolFull: the spool holds more than it may; the client should retry later.
            DiskFull: the spool's disk is nearly full.
        """
        if self.free_bytes is not None and self.free_bytes < self.min_free_bytes:
            self.rejected += 1
            raise DiskFull(f"The platform's disk is nearly full ({self.free_bytes} bytes free, "
                           f"{self.min_free_bytes} needed to record requests); an operator must free space")
        if self.pending_estimate() > self.max_pending_bytes:
            self.rejected += 1
            raise SpoolFull(
                "The platform is recording requests slower than they arrive (trace spool full); retry shortly"
            )

    async def record(self, header: dict[str, Any], record: bytes, alone: bool = False) -> None:
        """Spool one request; returns once it is on disk. ``alone``: no other request is in
        progress (``SpoolAppender.append``).

        Raises:
            InsufficientStorage: the disk is full; the request must not be acknowledged.
            Unavailable: the spool could not be written for another reason.
        """
        try:
            await self.appender.append(encode_record(orjson.dumps(header), record), alone=alone)
        except OSError as error:
            log.error("could not spool the record of request %s: %s", header.get("request_id"), error)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise InsufficientStorage("The platform's disk is full: the request could not be recorded, so it "
                                          "was not acknowledged; an operator must free space") from None
            raise Unavailable(f"The request could not be recorded ({error.strerror}); retry shortly") from None

    @staticmethod
    def gateway_record(endpoint: str, body: bytes, error: str, start_ns: int) -> bytes:
        """A record for a request that never reached a worker (or lost it midway)."""
        try:
            inputs = orjson.loads(body)
        except orjson.JSONDecodeError:
            inputs = body[:10_000].decode(errors="replace")
        built = trace_record.build(name=f"/serving-endpoints/{endpoint}/invocations", start_ns=start_ns,
                                   inputs=inputs, outputs=None, error=error)
        return trace_record.encode(built)


def header(*, request_id: str, endpoint: str, experiment_id: str | None, entity: str | None, model: tuple[str, str] | None,
           status_code: int, started: float, caller: str | None, route: str, stream: bool,
           client_request_id: str | None = None, shadow_of: str | None = None) -> dict[str, Any]:
    """The spool header of one request's record. ``shadow_of``: for a shadow copy, the trace id
    of the live request it copied (its row and trace are marked with it)."""
    return {
        "request_id": request_id,
        "client_request_id": client_request_id,
        "ts_ms": int(time.time() * 1000),
        "endpoint": endpoint,
        "experiment_id": experiment_id,
        "entity": entity,
        "model_name": model[0] if model else None,
        "model_version": model[1] if model else None,
        "status_code": status_code,
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        "caller": caller,
        "route": route,
        "stream": stream,
        **({"shadow_of": shadow_of} if shadow_of else {}),
    }
