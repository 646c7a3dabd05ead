"""Gateway side of durable tracing: spool each request's record before its answer goes out,
and refuse new work (503 + Retry-After) rather than lose records when the writer falls behind."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import orjson

from agentwharf.errors import Unavailable
from agentwharf.tracing import record as trace_record
from agentwharf.tracing.spool import SpoolAppender, encode_record


class SpoolFull(Unavailable):
    """Back-pressure: the request is refused before any work, so it has nothing to record."""


class Recorder:
    def __init__(self, appender: SpoolAppender, max_pending_bytes: int):
        self.appender = appender
        self.max_pending_bytes = max_pending_bytes
        #: Bytes spooled but not yet in the store, as of the monitor's last look...
        self.pending_bytes = 0
        #: ...plus what was appended since, so a burst cannot overshoot between two looks.
        self._appended_at_last_look = 0
        self.lag_seconds = 0.0
        self.requests: Counter[tuple[str, int]] = Counter()
        self.rejected = 0

    def observe(self, pending_bytes: int, lag_seconds: float) -> None:
        """Called by the platform's monitor with what the writer has not stored yet."""
        self.pending_bytes = pending_bytes
        self.lag_seconds = lag_seconds
        self._appended_at_last_look = self.appender.appended_bytes

    def pending_estimate(self) -> int:
        return self.pending_bytes + (self.appender.appended_bytes - self._appended_at_last_look)

    def check_capacity(self) -> None:
        """Raises:
            Unavailable: the spool holds more than it may; the client should retry later.
        """
        if self.pending_estimate() > self.max_pending_bytes:
            self.rejected += 1
            raise SpoolFull(
                "The platform is recording requests slower than they arrive (trace spool full); retry shortly"
            )

    async def record(self, header: dict[str, Any], record: bytes) -> None:
        """Spool one request; returns once it is on disk."""
        self.requests[(header["endpoint"], header["status_code"])] += 1
        await self.appender.append(encode_record(orjson.dumps(header), record))

    @staticmethod
    def gateway_record(endpoint: str, body: bytes, error: str, start_ns: int) -> bytes:
        """A record for a request that never reached a worker (or lost it midway)."""
        try:
            inputs = orjson.loads(body)
        except orjson.JSONDecodeError:
            inputs = body[:10_000].decode(errors="replace")
        built = trace_record.build(name=f"/serving-endpoints/{endpoint}/invocations", start_ns=start_ns,
                                   inputs=inputs, outputs=None, error=error)
        return orjson.dumps(built, default=str)


def header(*, request_id: str, endpoint: str, experiment_id: str | None, entity: str | None, model: tuple[str, str] | None,
           status_code: int, started: float, caller: str | None, route: str, stream: bool) -> dict[str, Any]:
    return {
        "request_id": request_id,
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
    }
