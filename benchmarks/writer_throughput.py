"""The spool writer's sustained throughput on SQLite and on PostgreSQL, in one run.

    .venv/bin/python benchmarks/writer_throughput.py [--records 20000] [--batch-size 5000]

A spool of realistic records is made once: the guide's EchoAgent answers a Responses request
in this process with MLflow tracing on, its trace is caught the way a worker catches it
(``tracing.capture``) and recorded the way the worker records it (``tracing.record``); each
spooled record is that one with fresh trace and request ids, made as production makes them
(``tracing.ids``; ~5 KB, 2 spans, ~25 rows). The same spool is then drained by the real
``SpoolWriter`` into a fresh database of each kind, with MLflow's tables, agentwharf's tables
and one experiment, batch by batch as in production (one transaction per batch, checkpoint
included), and timed from the first batch to the last.

PostgreSQL is a throwaway cluster of this machine's PostgreSQL (``tests/integration/services``)
with its defaults: fsync and synchronous commit on, as production would run it. SQLite is a file
in a temp dir with the writer's own settings (WAL, ``synchronous=NORMAL``).
"""

from __future__ import annotations

import argparse
import asyncio
import runpy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

ECHO_AGENT = ROOT / "examples" / "echo" / "agent.py"
ENDPOINT = "agents_main-default-echo"


def template_record(scratch: Path) -> tuple[dict, bytes]:
    """One real request's (header, record): the EchoAgent traced as a worker traces it."""
    import mlflow
    from mlflow.types.responses import ResponsesAgentRequest

    from agentwharf.tracing import capture, record
    from agentwharf.tracing.recorder import header

    # Caught in memory, never exported; MLflow still wants a tracking store to resolve the
    # experiment of a new trace.
    mlflow.set_tracking_uri(f"sqlite:///{scratch / 'template.db'}")
    capture.install()
    agent = runpy.run_path(str(ECHO_AGENT))["EchoAgent"]()
    request = {"input": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
               "context": {"conversation_id": "c-1", "user_id": "ada"}}
    start_ns = time.time_ns()
    capture.begin()
    answer = agent.predict(ResponsesAgentRequest(**request)).model_dump(exclude_none=True)
    built = record.build(name=f"/serving-endpoints/{ENDPOINT}/invocations", start_ns=start_ns, inputs=request,
                         outputs=answer, error=None, agent_traces=capture.take(),
                         attributes={"agentwharf.endpoint": ENDPOINT, "agentwharf.served_entity": "main-default-echo_1"})
    assert len(built["spans"]) == 2, "the EchoAgent's own span was not caught"
    head = header(request_id="template", endpoint=ENDPOINT, experiment_id="0", entity="main-default-echo_1",
                  model=("main.default.echo", "1"), status_code=200, started=time.perf_counter(), caller="ada",
                  route="invocations", stream=False)
    return head, record.encode(built)


def make_spool(folder: Path, count: int) -> int:
    """``count`` records in a spool at ``folder``; returns the spool's size in bytes."""
    from agentwharf.tracing import ids
    from agentwharf.tracing.spool import SpoolAppender, encode_record

    head, body = template_record(folder.parent)
    trace_id = orjson.loads(body)["trace_id"].encode()
    appender = SpoolAppender(folder)
    appender.open()

    async def fill() -> None:
        for _ in range(count):
            # The ids production makes (time-ordered: where they land in the indexes matters).
            request_id = ids.new_request_id()
            spooled = {**head, "request_id": request_id, "client_request_id": request_id, "ts_ms": int(time.time() * 1000)}
            await appender.append(encode_record(orjson.dumps(spooled), body.replace(trace_id, ids.new_trace_ids()[1].encode())))

    asyncio.run(fill())
    appender.close()
    return sum(p.stat().st_size for p in folder.iterdir())


def prepare_database(url: str, artifacts: Path) -> str:
    """MLflow's tables and agentwharf's in a fresh database, and one experiment; its id."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from agentwharf.store.database import migrate

    store = SqlAlchemyStore(url, str(artifacts))
    experiment_id = store.create_experiment("writer-benchmark")
    store.engine.dispose()
    migrate(url)
    return experiment_id


def drain(url: str, spool: Path, batch_size: int) -> dict:
    """Time the real writer draining ``spool`` into ``url``; count what it stored."""
    from sqlalchemy import text

    from agentwharf.tracing.writer import SpoolWriter

    writer = SpoolWriter(url, spool, batch_size=batch_size)
    writer.checkpoint()  # connect and read the checkpoint before the clock starts
    started = time.perf_counter()
    while writer.run_once():
        pass
    seconds = time.perf_counter() - started
    with writer.db.engine.connect() as connection:
        traces = connection.execute(text("SELECT COUNT(*) FROM trace_info")).scalar()
        rows = sum(connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar()
                   for table in ("trace_info", "trace_tags", "trace_request_metadata", "spans", "aw_inference_log"))
    writer.db.dispose()
    return {"records": writer.written, "traces": traces, "rows": rows, "seconds": round(seconds, 3),
            "traces_per_s": round(writer.written / seconds, 1), "rows_per_s": round(rows / seconds, 1)}


def _with_experiment(spool: Path, target: Path, experiment_id: str) -> None:
    """A copy of the spool whose records belong to ``experiment_id`` of the target database."""
    from agentwharf.tracing.spool import SpoolAppender, SpoolReader, encode_record

    appender = SpoolAppender(target)
    appender.open()

    async def copy() -> None:
        for item in SpoolReader(spool).read(0, 0, 10**9):
            head = orjson.loads(item.header)
            head["experiment_id"] = experiment_id
            await appender.append(encode_record(orjson.dumps(head), item.record))

    asyncio.run(copy())
    appender.close()


def measure(records: int = 20000, batch_size: int = 5000, scratch: Path | None = None) -> dict:
    """Both databases' figures (``make bench`` prints them as rows)."""
    from agentwharf.settings import sqlalchemy_url
    from tests.integration.services import PostgresCluster

    scratch = Path(tempfile.mkdtemp(prefix="awbench-writer-")) if scratch is None else scratch
    cluster = PostgresCluster(durable=True)
    try:
        spool_bytes = make_spool(scratch / "template-spool", records)
        cluster.start()
        results = {"records": records, "batch_size": batch_size, "record_bytes": round(spool_bytes / records)}
        for name, url in (("sqlite", f"sqlite:///{scratch / 'writer.db'}"),
                          ("postgresql", sqlalchemy_url(cluster.create_database("writer_bench")))):
            experiment_id = prepare_database(url, scratch / "artifacts")
            spool = scratch / f"spool-{name}"
            _with_experiment(scratch / "template-spool", spool, experiment_id)
            results[name] = drain(url, spool, batch_size)
            if results[name]["traces"] != records:
                raise RuntimeError(f"{name}: {results[name]['traces']} traces stored of {records} spooled")
        return results
    finally:
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def report(results: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"spool writer: {results['records']} EchoAgent records (~{results['record_bytes']} B each), "
                        f"batches of {results['batch_size']}")
    for column in ("database", "traces/s", "rows/s", "seconds", "÷ sqlite"):
        table.add_column(column, justify="right" if column != "database" else "left")
    base = results["sqlite"]["traces_per_s"]
    for name in ("sqlite", "postgresql"):
        row = results[name]
        table.add_row(name, f"{row['traces_per_s']:,.0f}", f"{row['rows_per_s']:,.0f}", f"{row['seconds']:.2f}",
                      f"{row['traces_per_s'] / base:.2f}x")
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--json", type=Path, help="also save the results here")
    args = parser.parse_args()
    from rich.console import Console

    results = measure(args.records, args.batch_size)
    report(results, Console())
    if args.json:
        args.json.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
