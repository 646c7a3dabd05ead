"""Time-ordered ids for traces and requests.

Every request the platform serves becomes rows keyed by its ids: MLflow's ``trace_info``,
``trace_tags``, ``trace_request_metadata`` and ``spans`` by the trace id (``tr-`` and the
OpenTelemetry trace id in hex), ``aw_inference_log`` by the platform's request id. Fully random
ids (OpenTelemetry's default generator, ``uuid4``) send every insert to a random page of each
B-tree index, so a large table's inserts touch pages all over the index: cache misses, page
splits in the middle, more pages written per batch. Ids whose high bits are the time land at
the right-hand edge of the index, like an auto-increment key; on the spool writer's benchmark
that raised SQLite's traces/s by about a third (benchmarks/README.md).

The layouts, both 128 bits and written as 32 hex digits exactly as before:

* trace id: 48-bit Unix time in milliseconds, then 80 random bits. W3C Trace Context level 2
  asks that the right-most 7 bytes of a trace id be random (samplers hash them); 80 bits keep
  that, so ``is_trace_id_random`` stays true, and MLflow's ``tr-<32 hex>`` form is unchanged.
* request id: a UUID version 7 (RFC 9562): the same 48-bit time, then the version and variant
  bits and 74 random bits. It was a ``uuid4`` hex and stays a valid UUID in the same shape.

Ids made in the same millisecond are in random order among themselves; across milliseconds
they increase (a clock stepped back is held at the last time seen, per process). The random
bits come from ``os.urandom``: unaffected by an agent calling ``random.seed`` and fresh in a
forked worker.
"""

from __future__ import annotations

import os
import time

TRACE_ID_PREFIX = "tr-"
_RANDOM_BITS = 80
_last_ms = 0


def _now_ms() -> int:
    """Milliseconds since the epoch, never less than the last value returned (48 bits)."""
    global _last_ms
    now = time.time_ns() // 1_000_000
    if now < _last_ms:
        now = _last_ms
    _last_ms = now
    return now & 0xFFFF_FFFF_FFFF


def otel_trace_id() -> int:
    """A 128-bit OpenTelemetry trace id: the time in milliseconds, then 80 random bits."""
    return (_now_ms() << _RANDOM_BITS) | int.from_bytes(os.urandom(_RANDOM_BITS // 8), "big")


def mlflow_trace_id(otel_id: int) -> str:
    """MLflow's id of the trace whose OpenTelemetry id is ``otel_id`` (``tr-`` + 32 hex)."""
    return f"{TRACE_ID_PREFIX}{otel_id:032x}"


def new_trace_ids() -> tuple[int, str]:
    """A new trace's OpenTelemetry id and MLflow id."""
    otel_id = otel_trace_id()
    return otel_id, mlflow_trace_id(otel_id)


def new_request_id() -> str:
    """A request id: a UUID version 7 as 32 hex digits (the shape ``uuid4().hex`` had)."""
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits, 74 of them used
    value = (_now_ms() << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return f"{value:032x}"


def id_generator():
    """An OpenTelemetry ``IdGenerator`` making time-ordered trace ids; span ids stay random
    (OpenTelemetry's default)."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class TimeOrderedIdGenerator(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            return otel_trace_id()  # never 0 (the invalid id): the time bits are not

        def is_trace_id_random(self) -> bool:
            return True  # the right-most 7 bytes are random, as W3C Trace Context asks

    return TimeOrderedIdGenerator()
