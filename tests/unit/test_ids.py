"""agentwharf.tracing.ids: trace and request ids whose high bits are the time in milliseconds
(so the store's indexes are appended to, not written at random pages) and whose low bits are
random, in the shapes MLflow and callers already know."""

import re
import time
import uuid

from agentwharf.tracing import ids


def ms_of_trace(trace_id: str) -> int:
    return int(trace_id[3:], 16) >> 80


def test_trace_ids_are_mlflow_tr_ids_of_the_otel_id_with_the_time_on_top():
    before = time.time_ns() // 1_000_000
    otel_id, trace_id = ids.new_trace_ids()
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"tr-[0-9a-f]{32}", trace_id)
    assert int(trace_id[3:], 16) == otel_id and 0 < otel_id < 1 << 128
    assert before <= ms_of_trace(trace_id) <= after


def test_request_ids_are_uuid7_hex_with_the_time_on_top():
    before = time.time_ns() // 1_000_000
    request_id = ids.new_request_id()
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    parsed = uuid.UUID(hex=request_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= int(request_id[:12], 16) <= after


def test_ids_increase_across_milliseconds():
    trace_ids, request_ids = [], []
    for _ in range(5):
        trace_ids.append(ids.new_trace_ids()[1])
        request_ids.append(ids.new_request_id())
        time.sleep(0.002)
    assert trace_ids == sorted(trace_ids) and len(set(ms_of_trace(t) for t in trace_ids)) == 5
    assert request_ids == sorted(request_ids)


def test_ids_are_unique_across_100k():
    assert len({ids.new_trace_ids()[0] for _ in range(100_000)}) == 100_000
    assert len({ids.new_request_id() for _ in range(100_000)}) == 100_000


def test_low_bits_are_random():
    """Ids of one millisecond differ in their random bits: each of the 80 low bits of trace ids
    (the 74 random bits of request ids) is set in about half of 4,000 ids, and W3C's right-most
    7 bytes are never repeated."""
    trace_low = [ids.otel_trace_id() & ((1 << 80) - 1) for _ in range(4000)]
    request_ids = [int(ids.new_request_id(), 16) for _ in range(4000)]
    request_low = [((r >> 64) & 0xFFF) << 62 | (r & ((1 << 62) - 1)) for r in request_ids]
    for values, bits in ((trace_low, 80), (request_low, 74)):
        for bit in range(bits):
            ones = sum((v >> bit) & 1 for v in values)
            assert 1700 < ones < 2300, (bits, bit, ones)
    assert len({v & ((1 << 56) - 1) for v in trace_low}) == 4000


def test_the_otel_generator_makes_time_ordered_trace_ids_and_random_span_ids():
    generator = ids.id_generator()
    first = generator.generate_trace_id()
    time.sleep(0.002)
    second = generator.generate_trace_id()
    assert first >> 80 < second >> 80 <= time.time_ns() // 1_000_000
    assert generator.is_trace_id_random()
    spans = [generator.generate_span_id() for _ in range(1000)]
    assert all(0 < s < 1 << 64 for s in spans) and len(set(spans)) == 1000
    assert sum(s >> 63 for s in spans) > 400  # the top bit too: span ids carry no time
