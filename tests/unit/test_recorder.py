"""agentwharf.tracing.recorder: back-pressure when the spool is full, and what gets spooled."""

import asyncio
import time

import orjson
import pytest

from agentwharf.errors import Unavailable
from agentwharf.tracing.recorder import Recorder, SpoolFull, header
from agentwharf.tracing.spool import SpoolAppender, SpoolReader


@pytest.fixture
def appender(tmp_path):
    made = SpoolAppender(tmp_path / "spool")
    made.open()
    yield made
    made.close()


def record_one(recorder, request_id="r1", endpoint="ep", status=200):
    h = header(request_id=request_id, endpoint=endpoint, experiment_id="1", entity="e", model=("m", "1"),
               status_code=status, started=time.perf_counter(), caller=None, route="invocations", stream=False)
    asyncio.run(recorder.record(h, b'{"trace_id":"tr-x"}'))
    return h


def test_spool_full_is_a_503_unavailable():
    error = SpoolFull("full")
    assert isinstance(error, Unavailable)
    assert error.http_status == 503
    assert error.error_code == "TEMPORARILY_UNAVAILABLE"


def test_check_capacity_passes_below_and_at_the_limit(appender):
    recorder = Recorder(appender, max_pending_bytes=1000)
    recorder.check_capacity()
    recorder.observe(1000, 0.5)
    recorder.check_capacity()
    assert recorder.rejected == 0


def test_check_capacity_refuses_above_the_limit_and_counts_it(appender):
    recorder = Recorder(appender, max_pending_bytes=1000)
    recorder.observe(1001, 2.0)
    for expected in (1, 2):
        with pytest.raises(SpoolFull) as raised:
            recorder.check_capacity()
        assert recorder.rejected == expected
    assert "retry" in raised.value.message
    assert recorder.lag_seconds == 2.0
    recorder.observe(10, 0.0)  # the writer caught up
    recorder.check_capacity()
    assert recorder.rejected == 2


def test_appends_since_the_last_look_count_towards_the_limit(appender):
    recorder = Recorder(appender, max_pending_bytes=200)
    recorder.observe(0, 0.0)
    record_one(recorder)
    size = appender.appended_bytes
    assert size > 0
    assert recorder.pending_estimate() == size
    while appender.appended_bytes <= 200:
        record_one(recorder)
    assert recorder.pending_estimate() == appender.appended_bytes
    with pytest.raises(SpoolFull):
        recorder.check_capacity()


def test_observe_resets_the_estimate_baseline(appender):
    recorder = Recorder(appender, max_pending_bytes=10**9)
    record_one(recorder)
    record_one(recorder, "r2")
    assert recorder.pending_estimate() == appender.appended_bytes
    recorder.observe(123, 1.0)
    assert recorder.pending_estimate() == 123
    before = appender.appended_bytes
    record_one(recorder, "r3")
    # Records differ in size by a byte or two (the latency's digits): measure this one.
    assert recorder.pending_estimate() == 123 + (appender.appended_bytes - before)


def test_record_spools_header_and_record(tmp_path, appender):
    recorder = Recorder(appender, max_pending_bytes=10**9)
    h1 = record_one(recorder, "r1", "ep", 200)
    record_one(recorder, "r2", "ep", 200)
    record_one(recorder, "r3", "other", 503)
    assert appender.appended_records == 3
    records = list(SpoolReader(tmp_path / "spool").read(0, 0, 100))
    assert [orjson.loads(r.header)["request_id"] for r in records] == ["r1", "r2", "r3"]
    assert orjson.loads(records[0].header) == h1
    assert records[0].record == b'{"trace_id":"tr-x"}'


def test_header_fields():
    started = time.perf_counter() - 0.05
    before = int(time.time() * 1000)
    h = header(request_id="r", endpoint="ep", experiment_id="3", entity="ent", model=("main.m", "4"), status_code=201,
               started=started, caller="ada", route="responses", stream=True)
    assert before <= h["ts_ms"] <= int(time.time() * 1000)
    assert h["latency_ms"] >= 50
    assert (h["model_name"], h["model_version"]) == ("main.m", "4")
    assert {k: h[k] for k in ("request_id", "endpoint", "experiment_id", "entity", "status_code", "caller", "route", "stream")} == {
        "request_id": "r", "endpoint": "ep", "experiment_id": "3", "entity": "ent", "status_code": 201,
        "caller": "ada", "route": "responses", "stream": True}
    no_model = header(request_id="r", endpoint="ep", experiment_id=None, entity=None, model=None, status_code=404,
                      started=time.perf_counter(), caller=None, route="invocations", stream=False)
    assert no_model["model_name"] is None and no_model["model_version"] is None


def test_gateway_record_for_a_json_body():
    start_ns = time.time_ns()
    built = orjson.loads(Recorder.gateway_record("ep", b'{"input": [1]}', "Worker crashed", start_ns))
    assert built["request"] == {"input": [1]}
    assert built["response"] is None
    assert built["error"] == "Worker crashed" and built["state"] == "ERROR"
    [root] = built["spans"]
    assert root["name"] == "/serving-endpoints/ep/invocations"
    assert root["status"]["code"] == "STATUS_CODE_ERROR"
    assert built["start_ms"] == start_ns // 1_000_000


def test_gateway_record_for_a_body_that_is_not_json():
    built = orjson.loads(Recorder.gateway_record("ep", b"\xff\xfenot json{", "Malformed", time.time_ns()))
    assert built["request"] == "\ufffd\ufffdnot json{"
    assert orjson.loads(built["spans"][0]["attributes"]["mlflow.spanInputs"]) == built["request"]
    assert built["error"] == "Malformed"


def test_gateway_record_keeps_only_the_start_of_a_huge_non_json_body():
    built = orjson.loads(Recorder.gateway_record("ep", b"y" * 50_000, "Too big", time.time_ns()))
    assert built["request"] == "y" * 10_000


def test_a_nearly_full_disk_refuses_with_507_before_any_work(appender):
    from agentwharf.tracing.recorder import DiskFull

    recorder = Recorder(appender, max_pending_bytes=10**9, min_free_bytes=1000)
    recorder.observe(0, 0.0, free=999)
    with pytest.raises(DiskFull) as raised:
        recorder.check_capacity()
    assert raised.value.http_status == 507 and raised.value.error_code == "INSUFFICIENT_STORAGE"
    assert "free space" in raised.value.message and recorder.rejected == 1
    recorder.observe(0, 0.0, free=1000)
    recorder.check_capacity()


def test_a_spool_write_the_disk_refuses_is_507_and_other_failures_503(appender, monkeypatch):
    import errno

    from agentwharf.errors import InsufficientStorage

    recorder = Recorder(appender, max_pending_bytes=10**9)
    for code, expected in ((errno.ENOSPC, InsufficientStorage), (errno.EIO, Unavailable)):
        async def broken(data, alone=False, code=code):
            raise OSError(code, "refused")

        monkeypatch.setattr(appender, "append", broken)
        with pytest.raises(expected) as raised:
            record_one(recorder)
        assert raised.value.http_status == (507 if code == errno.ENOSPC else 503)
