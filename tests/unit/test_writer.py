"""agentwharf.tracing.writer: spooled records into MLflow's trace tables and the inference table,
in-process against SQLite, read back through MLflow's own SQL store."""

import asyncio
import shutil
import sqlite3
import time
from types import SimpleNamespace

import orjson
import pytest
import sqlalchemy as sa
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from agentwharf.store.database import migrate
from agentwharf.tracing import record
from agentwharf.tracing.recorder import header as make_header
from agentwharf.tracing.spool import SpoolAppender, encode_record, list_segments
from agentwharf.tracing.writer import SpoolWriter, read_progress

ENDPOINT = "ep"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A SQLite file with MLflow's tables, agentwharf's tables and one experiment, made once."""
    folder = tmp_path_factory.mktemp("template")
    url = f"sqlite:///{folder}/db.sqlite"
    store = SqlAlchemyStore(url, str(folder / "artifacts"))
    experiment_id = store.create_experiment("traces")
    store.engine.dispose()
    migrate(url)
    return folder / "db.sqlite", experiment_id, store.get_experiment(experiment_id).artifact_location


@pytest.fixture
def env(tmp_path, template):
    source, experiment_id, artifact_location = template
    shutil.copy(source, tmp_path / "db.sqlite")
    url = f"sqlite:///{tmp_path}/db.sqlite"
    store = SqlAlchemyStore(url, str(tmp_path / "artifacts"))
    engine = sa.create_engine(url)
    writers = []

    def writer(**kwargs):
        made = SpoolWriter(url, tmp_path / "spool", **kwargs)
        writers.append(made)
        return made

    yield SimpleNamespace(url=url, spool=tmp_path / "spool", experiment_id=experiment_id, store=store,
                          engine=engine, writer=writer, artifact_location=artifact_location)
    for made in writers:
        made.db.dispose()
    engine.dispose()
    store.engine.dispose()


def header(request_id, experiment_id, status_code=200):
    return make_header(request_id=request_id, endpoint=ENDPOINT, experiment_id=experiment_id, entity="ent_1",
                       model=("main.m", "2"), status_code=status_code, started=time.perf_counter(), caller="ada",
                       route="invocations", stream=False)


def fake_agent_trace(trace_id: str):
    """What capture.take() returns, reduced to what record.build reads: one agent span."""
    span = {
        "trace_id": "ignored", "span_id": "ASNFZ4mrze8=", "parent_span_id": None, "name": "predict",
        "start_time_unix_nano": time.time_ns() - 1_000_000, "end_time_unix_nano": time.time_ns(), "events": [],
        "status": {"code": "STATUS_CODE_OK", "message": ""},
        "attributes": {"mlflow.spanType": '"AGENT"', "mlflow.spanInputs": '{"q":1}', "mlflow.spanOutputs": '"a"'},
        "links": [],
    }
    return SimpleNamespace(info=SimpleNamespace(trace_id=trace_id, trace_metadata={"mlflow.user": "agent-user",
                                                                                    "mlflow.trace.sizeBytes": "9"}),
                           data=SimpleNamespace(spans=[SimpleNamespace(to_dict=lambda: dict(span))]))


def make_record(i, error=None, agent=True):
    trace_id = f"tr-{i + 1:032x}"
    built = record.build(name=f"/serving-endpoints/{ENDPOINT}/invocations", start_ns=time.time_ns() - 5_000_000,
                         inputs={"input": [{"role": "user", "content": f"q{i}"}], "context": {"conversation_id": f"c{i}"}},
                         outputs=None if error else {"output": f"a{i}"}, error=error,
                         agent_traces=[fake_agent_trace(trace_id)] if agent else [])
    return built


def spool(env, items, segment_bytes=64 * 1024 * 1024):
    """Append (header, record) pairs as the gateway does; one appender run (one segment set)."""
    appender = SpoolAppender(env.spool, segment_bytes=segment_bytes)
    appender.open()

    async def run():
        for h, r in items:
            await appender.append(encode_record(orjson.dumps(h), orjson.dumps(r)))

    asyncio.run(run())
    appender.close()


def counts(env):
    with env.engine.connect() as c:
        return {table: c.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()
                for table in ("trace_info", "spans", "trace_tags", "trace_request_metadata", "aw_inference_log")}


def inference_rows(env):
    with env.engine.connect() as c:
        return {row.request_id: row for row in c.execute(sa.text("SELECT * FROM aw_inference_log"))}


def three(env):
    items = [(header(f"req-{i}", env.experiment_id), make_record(i)) for i in range(3)]
    spool(env, items)
    return items


def test_run_once_stores_traces_readable_by_mlflow(env):
    items = three(env)
    assert env.writer().run_once() == 3
    for h, built in items:
        trace = env.store.get_trace(built["trace_id"])
        assert trace.info.trace_id == built["trace_id"]
        assert trace.info.experiment_id == env.experiment_id
        assert trace.info.state.value == "OK"
        assert trace.info.client_request_id == h["request_id"]
        assert trace.info.trace_metadata["agentwharf.endpoint"] == ENDPOINT
        assert trace.info.trace_metadata["agentwharf.request_id"] == h["request_id"]
        assert trace.info.trace_metadata["mlflow.user"] == "agent-user"
        assert "mlflow.trace.sizeBytes" not in trace.info.trace_metadata
        assert trace.info.trace_metadata["mlflow.trace.session"] == built["request"]["context"]["conversation_id"]
        assert trace.info.tags["mlflow.trace.spansLocation"] == "TRACKING_STORE"
        root, agent = trace.data.spans
        assert root.name == f"/serving-endpoints/{ENDPOINT}/invocations" and root.parent_id is None
        assert agent.name == "predict" and agent.parent_id == root.span_id
        assert agent.span_id == "0123456789abcdef"
        assert root.inputs == built["request"] and root.outputs == built["response"]
        assert agent.inputs == {"q": 1} and agent.outputs == "a"
        assert agent.span_type == "AGENT"
    found, _ = env.store.search_traces(locations=[env.experiment_id], max_results=100)
    assert {t.trace_id for t in found} == {built["trace_id"] for _, built in items}


def test_trace_name_is_visible_to_mlflow(env):
    """MLflow 3.17 reads a trace's name from trace_info.trace_name, not from the trace_tags row."""
    _, built = three(env)[0]
    env.writer().run_once()
    trace = env.store.get_trace(built["trace_id"])
    assert trace.info.tags.get("mlflow.traceName") == ENDPOINT
    found, _ = env.store.search_traces(locations=[env.experiment_id],
                                       filter_string=f"tags.`mlflow.traceName` = '{ENDPOINT}'", max_results=100)
    assert len(found) == 3


def test_run_once_stores_one_inference_row_per_request(env):
    items = three(env)
    env.writer().run_once()
    stored = inference_rows(env)
    assert set(stored) == {"req-0", "req-1", "req-2"}
    for h, built in items:
        row = stored[h["request_id"]]
        assert row.trace_id == built["trace_id"]
        assert row.endpoint == ENDPOINT and row.status_code == 200 and row.served_entity == "ent_1"
        assert (row.model_name, row.model_version, row.caller, row.route) == ("main.m", "2", "ada", "invocations")
        assert orjson.loads(row.request) == built["request"]
        assert orjson.loads(row.response) == built["response"]
        assert not row.request_truncated and not row.response_truncated
        assert row.timestamp_ms == h["ts_ms"]


def test_error_request_is_an_error_trace_and_row(env):
    spool(env, [(header("bad", env.experiment_id, 500), make_record(9, error="ValueError: nope", agent=False))])
    env.writer().run_once()
    row = inference_rows(env)["bad"]
    assert row.status_code == 500 and row.error == "ValueError: nope" and row.response is None
    trace = env.store.get_trace(row.trace_id)
    assert trace.info.state.value == "ERROR"
    [root] = trace.data.spans
    assert root.status.status_code.value == "ERROR"


def test_request_without_experiment_gets_an_inference_row_but_no_trace(env):
    built = make_record(0, agent=False)
    spool(env, [(header("no-exp", None, 404), built)])
    assert env.writer().run_once() == 1
    assert counts(env)["trace_info"] == 0 and counts(env)["spans"] == 0
    assert inference_rows(env)["no-exp"].status_code == 404


def test_long_payloads_are_truncated_in_the_inference_row_only(env):
    built = make_record(0, agent=False)
    built["request"] = {"input": "z" * 300}
    spool(env, [(header("long", env.experiment_id), built)])
    env.writer(max_payload_chars=100).run_once()
    row = inference_rows(env)["long"]
    assert len(row.request) == 100 and row.request_truncated
    assert not row.response_truncated


def test_checkpoint_advances_and_progress_is_written(env):
    three(env)
    writer = env.writer(batch_size=2)
    assert writer.checkpoint() == (0, 0)
    assert read_progress(env.spool) is None
    assert writer.run_once() == 2
    segment, offset = writer.checkpoint()
    assert segment == 1 and 0 < offset < (env.spool / "seg-000000000001.log").stat().st_size
    assert writer.run_once() == 1
    assert writer.checkpoint() == (1, (env.spool / "seg-000000000001.log").stat().st_size)
    assert writer.run_once() == 0
    assert writer.reader.pending_bytes(*writer.checkpoint()) == 0
    progress = read_progress(env.spool)
    assert (progress["segment"], progress["offset"]) == writer.checkpoint()
    assert progress["written"] == 3
    # A new writer (a restarted process) resumes from the stored checkpoint.
    assert env.writer().run_once() == 0
    assert counts(env)["aw_inference_log"] == 3


def test_replay_after_a_crash_stores_nothing_twice(env):
    items = three(env)
    writer = env.writer()
    writer.run_once()
    before = counts(env)
    with env.engine.begin() as c:  # the crash lost the checkpoint: the batch is read again
        c.execute(sa.text("UPDATE aw_spool_checkpoint SET segment = 0, \"offset\" = 0"))
    assert env.writer().checkpoint() == (0, 0)
    assert env.writer().run_once() == 3
    assert counts(env) == before
    with env.engine.connect() as c:
        per_trace = c.execute(sa.text("SELECT request_id, COUNT(*) FROM trace_info GROUP BY request_id")).all()
        per_request = c.execute(sa.text("SELECT request_id, COUNT(*) FROM aw_inference_log GROUP BY request_id")).all()
    assert sorted(per_trace) == sorted((built["trace_id"], 1) for _, built in items)
    assert sorted(per_request) == [("req-0", 1), ("req-1", 1), ("req-2", 1)]
    assert len(env.store.get_trace(items[0][1]["trace_id"]).data.spans) == 2
    assert writer.checkpoint() != (0, 0)


def test_consumed_segments_are_deleted(env):
    items = [(header(f"req-{i}", env.experiment_id), make_record(i)) for i in range(5)]
    spool(env, items, segment_bytes=1)  # one record per segment
    assert list_segments(env.spool) == [1, 2, 3, 4, 5, 6]
    writer = env.writer(batch_size=2)
    writer.run_once()
    assert writer.checkpoint()[0] == 2
    assert list_segments(env.spool) == [2, 3, 4, 5, 6]
    writer.run_once()
    assert list_segments(env.spool) == [4, 5, 6]
    writer.run_once()
    writer.run_once()  # nothing left: cleans up before the checkpoint's segment
    assert writer.checkpoint()[0] == 5
    assert list_segments(env.spool) == [5, 6]
    assert set(inference_rows(env)) == {f"req-{i}" for i in range(5)}


def test_records_across_gateway_restarts_are_all_stored(env):
    spool(env, [(header("a", env.experiment_id), make_record(1))])
    spool(env, [(header("b", env.experiment_id), make_record(2))])
    path = env.spool / "seg-000000000001.log"
    path.write_bytes(path.read_bytes() + b"\x00\x00\x01")  # a crash left half a length prefix
    spool(env, [(header("c", env.experiment_id), make_record(3))])
    writer = env.writer()
    assert writer.run_once() == 3
    assert set(inference_rows(env)) == {"a", "b", "c"}
    assert writer.checkpoint()[0] == 3


def test_artifact_location_tag_points_into_the_experiment(env):
    _, built = three(env)[0]
    env.writer().run_once()
    with env.engine.connect() as c:
        value = c.execute(sa.text("SELECT value FROM trace_tags WHERE request_id = :id AND key = 'mlflow.artifactLocation'"),
                          {"id": built["trace_id"]}).scalar()
    assert value == f"{env.artifact_location}/traces/{built['trace_id']}/artifacts"


def test_empty_spool_is_nothing_to_do(env):
    writer = env.writer()
    assert writer.run_once() == 0
    assert writer.checkpoint() == (0, 0)
    assert counts(env)["aw_inference_log"] == 0


def test_values_longer_than_their_column_are_cut_and_nul_characters_dropped(env):
    """PostgreSQL refuses a VARCHAR(n) value past n characters and any NUL character, and a
    refused batch would be retried forever: the writer makes every value fit, on every
    database, so a trace reads the same whichever stores it."""
    built = make_record(0)
    built["metadata"] = {"k" * 300: "long key", "with-nul": "a\x00b"}
    built["error"] = "boom\x00"
    spool(env, [(header("fit", env.experiment_id) | {"caller": "c" * 300}, built)])
    assert env.writer().run_once() == 1
    trace = env.store.get_trace(built["trace_id"])
    assert trace.info.trace_metadata["k" * 250] == "long key"  # MLflow's key column is VARCHAR(250)
    assert trace.info.trace_metadata["with-nul"] == "ab"
    row = inference_rows(env)["fit"]
    assert row.caller == "c" * 256 and row.error == "boom"


def test_fitted_touches_only_text_values_of_the_checked_columns():
    from agentwharf.tracing.writer import fitted

    assert fitted(["abcdef", 7, None, "x\x00y", "zz\x00"], [(0, 3), (1, 3), (2, 3), (3, None)]) == ("abc", 7, None, "xy", "zz\x00")


def test_segments_are_deleted_only_after_the_database_is_synced(env, monkeypatch):
    """SQLite commits with synchronous=NORMAL are not yet on disk: a power cut could lose the
    checkpoint of records whose segment is gone. The WAL is synced before a segment is deleted."""
    from agentwharf.tracing import writer as writer_module

    synced = []
    monkeypatch.setattr(writer_module, "sync_files", lambda *paths: synced.append(paths))
    items = [(header(f"req-{i}", env.experiment_id), make_record(i)) for i in range(3)]
    spool(env, items, segment_bytes=1)  # one record per segment
    writer = env.writer(batch_size=1)
    writer.run_once()  # the checkpoint is at the end of segment 1: nothing before it to delete
    assert synced == [] and list_segments(env.spool) == [1, 2, 3, 4]
    writer.run_once()
    assert list_segments(env.spool) == [2, 3, 4]
    assert synced == [(f"{env.spool.parent}/db.sqlite", f"{env.spool.parent}/db.sqlite-wal")]


def test_a_record_the_database_refuses_costs_only_itself(env):
    """A trace whose experiment is gone for good (``mlflow gc``) fails its foreign key: the
    batch is stored record by record, that request keeps its inference row, and the writer goes
    on instead of retrying the same batch forever."""
    items = [(header("before", env.experiment_id), make_record(0)),
             (header("orphan", "987654"), make_record(1)),
             (header("after", env.experiment_id), make_record(2))]
    spool(env, items)
    writer = env.writer()
    assert writer.run_once() == 3
    rows = inference_rows(env)
    assert set(rows) == {"before", "orphan", "after"}
    assert counts(env)["trace_info"] == 2  # the orphan's trace alone is refused
    assert env.store.get_trace(items[2][1]["trace_id"]) is not None
    assert writer.run_once() == 0  # the checkpoint is past all three


def test_a_record_refused_even_alone_is_kept_with_the_reason(env, monkeypatch):
    from agentwharf.tracing import writer as writer_module

    items = [(header(f"req-{i}", env.experiment_id), make_record(i)) for i in range(3)]
    spool(env, items)
    real = writer_module.inference_row

    def refusing(header_, record_, limit):
        if header_["request_id"] == "req-1":  # as the driver says it of a row no retry can store
            raise sqlite3.IntegrityError("CHECK constraint failed: a value this database cannot take")
        return real(header_, record_, limit)

    monkeypatch.setattr(writer_module, "inference_row", refusing)
    writer = env.writer()
    assert writer.run_once() == 3
    assert set(inference_rows(env)) == {"req-0", "req-2"}
    kept = [orjson.loads(line) for line in (env.spool / writer_module.REFUSED_FILE).read_bytes().splitlines()]
    assert [k["header"]["request_id"] for k in kept] == ["req-1"]
    assert "CHECK constraint failed" in kept[0]["reason"]
    assert writer.run_once() == 0


def test_sqlite_bulk_insert_skips_rows_stored_before_but_never_drops_a_row_that_breaks_a_constraint(tmp_path):
    from agentwharf.tracing.bulk import SqliteInserter

    connection = sqlite3.connect(tmp_path / "bulk.db")
    connection.execute('CREATE TABLE "t" (id TEXT PRIMARY KEY, value TEXT NOT NULL, n INTEGER CHECK (n >= 0))')
    inserter = SqliteInserter()
    inserter.insert(connection, [("t", ("id", "value", "n"), [("a", "first", 1), ("b", "second", 2)])])
    inserter.insert(connection, [("t", ("id", "value", "n"), [("a", "replayed", 1), ("c", "third", 3)])])
    assert connection.execute("SELECT id, value FROM t ORDER BY id").fetchall() == [("a", "first"), ("b", "second"), ("c", "third")]
    for broken in (("d", None, 4), ("e", "fifth", -1)):
        with pytest.raises(sqlite3.IntegrityError):
            inserter.insert(connection, [("t", ("id", "value", "n"), [broken])])
    assert connection.execute("SELECT COUNT(*) FROM t").fetchone() == (3,)
