"""Serving benchmark: the guide's EchoAgent under the same wrk load on four systems, one run,
the overhead the platform adds to one LLM call (``llm-overhead``: no wrk needed), online
scoring's time from an answer to its assessments (``time-to-assessment``: no wrk needed), and
agents that wait (``wait-250ms``: a 250 ms predict under 1,000 requests in flight, agentwharf and
AgentServer; ``stream-ttfe``: 1,000 concurrent SSE streams' first event).

    .venv/bin/python benchmarks/run.py [--duration 10] [--connections 32]
                                       [--only NAME[,NAME]] [--json PATH] [--keep-temp]
                                       [--no-costs] [--no-writer] [--writer-records N]
                                       [--wait-duration 15] [--wait-connections 1000,100]

Each system is started in turn on a free 127.0.0.1 port in its own temp dir, checked with one
real request (200 and the echo text, or the run fails loudly), driven with
``wrk -t2 -c<connections> -d<duration>s --latency`` posting the same JSON body, then stopped.
See benchmarks/README.md for how to read the table.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rich.console import Console  # noqa: E402

import llm_overhead  # noqa: E402
import platform_costs  # noqa: E402
import procs  # noqa: E402
import report  # noqa: E402
import systems  # noqa: E402
import auth_check  # noqa: E402
import waiting  # noqa: E402
import wrk  # noqa: E402
import writer_throughput  # noqa: E402

TRACE_SETTLE_SECONDS = 5.0
PAUSE_BETWEEN_SYSTEMS = 2.0

# Wide enough for the table when the output is a pipe or a file (rich would assume 80 columns).
console = Console() if Console().is_terminal else Console(width=160)
err = Console(stderr=True, soft_wrap=True)


def bench_one(name: str, args: argparse.Namespace, script: Path) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"awbench-{name}-"))
    try:
        with systems.SYSTEMS[name](tmp) as running:
            systems.verify(name, running.url, running.headers)
            err.print(f"  {name}: verified 200 with the echo text; {args.duration}s of load on {running.url}")
            if running.headers:
                script = wrk.post_script(tmp / "post-with-token.lua", json.dumps(systems.BODY), running.headers)
            before = running.count_traces() if running.count_traces else None
            cpu_before = procs.cpu_seconds(running.pid) if running.pid else None
            result = wrk.run(running.url, script, args.duration, args.connections)
            ended = time.monotonic()
            notes = dict(running.notes)
            if running.after_load:
                notes["after_load"] = running.after_load()
            traces = None
            if running.count_traces:
                time.sleep(max(0.0, ended + TRACE_SETTLE_SECONDS - time.monotonic()))
                traces = running.count_traces() - before
            # Read after the settle: the writer's catching up is part of what a request costs.
            cpu = procs.cpu_us_per(cpu_before, procs.cpu_seconds(running.pid), result.answered) if running.pid else None
            return {"system": name, "wrk": result.as_dict(), "traces": traces, "notes": notes, "cpu_us_per_request": cpu}
    finally:
        if args.keep_temp:
            err.print(f"  {name}: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _meta(args: argparse.Namespace) -> dict:
    version = subprocess.run([wrk.require_wrk(), "--version"], capture_output=True, text=True).stdout.splitlines()
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "mlflow": importlib.metadata.version("mlflow"),
        "wrk": version[0] if version else "?",
        "threads": wrk.THREADS,
        "connections": args.connections,
        "duration_s": args.duration,
        "trace_settle_s": TRACE_SETTLE_SECONDS,
        "body": systems.BODY,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per system (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--only", help=f"comma-separated subset of: {','.join([*systems.SYSTEMS, *EXTRA_ROWS])}")
    parser.add_argument("--json", type=Path, help="also save the results here")
    parser.add_argument("--keep-temp", action="store_true", help="keep each system's temp dir (logs, databases)")
    parser.add_argument("--no-costs", action="store_true",
                        help="skip agentwharf's idle footprint and model-environment measurements")
    parser.add_argument("--no-writer", action="store_true",
                        help="skip the spool writer's throughput on SQLite and PostgreSQL")
    parser.add_argument("--writer-records", type=int, default=20000,
                        help="records the writer benchmark drains into each database (default 20000)")
    parser.add_argument("--wait-duration", type=int, default=15,
                        help=f"seconds of load per line of the {WAIT_ROW} and {STREAM_ROW} rows (default 15)")
    parser.add_argument("--wait-connections", default="1000,100",
                        help=f"concurrent requests for {WAIT_ROW} on agentwharf (default 1000,100; AgentServer "
                             "gets the largest) and concurrent streams for " + STREAM_ROW)
    args = parser.parse_args()
    args.wait_connections = [int(n) for n in args.wait_connections.split(",") if n.strip()]
    args.names = list(systems.SYSTEMS)
    args.llm = args.scoring = args.wait = args.stream = True
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in systems.SYSTEMS and n not in EXTRA_ROWS]
        if unknown:
            parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join([*systems.SYSTEMS, *EXTRA_ROWS])}")
        args.names = [n for n in systems.SYSTEMS if n in wanted]
        args.llm = LLM_ROW in wanted
        args.scoring = SCORING_ROW in wanted
        args.wait = WAIT_ROW in wanted
        args.stream = STREAM_ROW in wanted
    if args.duration < 1 or args.connections < wrk.THREADS:
        parser.error(f"--duration must be >= 1 and --connections >= {wrk.THREADS}")
    return args


LLM_ROW = "llm-overhead"
SCORING_ROW = "time-to-assessment"
WAIT_ROW = "wait-250ms"
STREAM_ROW = "stream-ttfe"
EXTRA_ROWS = (LLM_ROW, SCORING_ROW, WAIT_ROW, STREAM_ROW)


def bench_llm(args: argparse.Namespace) -> tuple[dict | None, str | None]:
    err.print(f"[bold]{LLM_ROW}[/]: the scripted provider, direct and through an LLM endpoint")
    tmp = Path(tempfile.mkdtemp(prefix="awbench-llm-"))
    try:
        return llm_overhead.measure(tmp), None
    except Exception as e:
        err.print(traceback.format_exc(), markup=False, highlight=False)
        return None, str(e).splitlines()[0]
    finally:
        if args.keep_temp:
            err.print(f"  {LLM_ROW}: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_scoring(args: argparse.Namespace) -> tuple[dict | None, str | None]:
    err.print(f"[bold]{SCORING_ROW}[/]: 50 traces/s, three online scorers (a judge on an LLM endpoint, two custom)")
    # Imported here: it is an MLflow client, and the wrk rows run without MLflow in this process.
    import time_to_assessment

    tmp = Path(tempfile.mkdtemp(prefix="awbench-scoring-"))
    try:
        return time_to_assessment.measure(tmp), None
    except Exception as e:
        err.print(traceback.format_exc(), markup=False, highlight=False)
        return None, str(e).splitlines()[0]
    finally:
        if args.keep_temp:
            err.print(f"  {SCORING_ROW}: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def bench_waiting(args: argparse.Namespace) -> tuple[dict | None, str | None]:
    err.print(f"[bold]{WAIT_ROW} / {STREAM_ROW}[/]: an agent that waits 250 ms, one that streams 20 tokens 25 ms apart, "
              f"{'/'.join(map(str, args.wait_connections))} in flight")
    tmp = Path(tempfile.mkdtemp(prefix="awbench-waiting-"))
    try:
        return waiting.measure(tmp, args.wait, args.stream, args.wait_connections, args.wait_connections,
                               args.wait_duration), None
    except Exception as e:
        err.print(traceback.format_exc(), markup=False, highlight=False)
        return None, str(e).splitlines()[0]
    finally:
        if args.keep_temp:
            err.print(f"  {WAIT_ROW}: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _extra_rows(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The rows that need no wrk: their results by name, and their errors."""
    results, errors = {}, []
    for wanted, name, bench, show in ((args.llm, "llm_overhead", bench_llm, report.llm_overhead),
                                      (args.scoring, "time_to_assessment", bench_scoring, report.time_to_assessment),
                                      (args.wait or args.stream, "waiting", bench_waiting, report.waiting)):
        if wanted:
            result, error = bench(args)
            show(result, error, console)
            results[name] = result
            if error:
                errors.append(error)
    return results, errors


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)  # so every finally (process stops, temp dirs) runs
    with tempfile.TemporaryDirectory(prefix="awbench-envs-") as environments:
        systems.shared_environments = Path(environments)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if not args.names:  # only rows that need no wrk
        results, errors = _extra_rows(args)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({**results, "errors": errors}, indent=2))
        return 1 if errors else 0
    try:
        wrk.require_wrk()
    except wrk.WrkMissing as e:
        err.print(f"[bold red]{e}[/]")
        return 2

    speed_before = procs.python_speed_ms()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="awbench-wrk-") as scratch:
        script = wrk.post_script(Path(scratch) / "post.lua", json.dumps(systems.BODY))
        for i, name in enumerate(args.names, 1):
            if i > 1:
                time.sleep(PAUSE_BETWEEN_SYSTEMS)
            err.print(f"[bold][{i}/{len(args.names)}] {name}[/]: starting")
            started = time.monotonic()
            try:
                rows.append(bench_one(name, args, script))
            except Exception as e:  # one broken system must not hide the others' numbers
                err.print(f"[bold red]{name} FAILED:[/]", highlight=False)
                err.print(traceback.format_exc(), markup=False, highlight=False)
                rows.append({"system": name, "wrk": None, "traces": None, "notes": {}, "error": str(e).splitlines()[0]})
            err.print(f"  {name}: done in {time.monotonic() - started:.0f}s")

    costs = None
    if not args.no_costs and "agentwharf" in args.names:
        err.print("[bold]agentwharf costs[/]: idle footprint, model environment cold and warm")
        with tempfile.TemporaryDirectory(prefix="awbench-costs-") as scratch:
            try:
                costs = platform_costs.measure(Path(scratch))
            except Exception:
                err.print(traceback.format_exc(), markup=False, highlight=False)

    writer = None
    if not args.no_writer:
        err.print(f"[bold]spool writer[/]: {args.writer_records} records into SQLite, then PostgreSQL")
        try:
            writer = writer_throughput.measure(args.writer_records)
        except Exception as e:
            err.print(traceback.format_exc(), markup=False, highlight=False)
            rows.append({"system": "writer", "wrk": None, "traces": None, "notes": {}, "error": str(e).splitlines()[0]})

    console.print()
    console.print(report.table([r for r in rows if r["system"] != "writer"]))
    report.agentwharf_details(rows, console)
    micro = auth_check.measure() if any(n.startswith("agentwharf") for n in args.names) else None
    report.auth_cost(rows, micro, console)
    report.worker_replicas(rows, console)
    report.gateway_processes(rows, console)
    if costs is not None:
        platform_costs.report(costs, console)
    if writer is not None:
        writer_throughput.report(writer, console)
    report.warnings(rows, console)
    results, errors = _extra_rows(args)
    console.print(f"this machine's speed for Python: a fixed pure-Python workload took {speed_before:.0f} ms before the run "
                  f"and {procs.python_speed_ms():.0f} ms after it (compare runs only where these agree)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": _meta(args), "systems": rows, "costs": costs, "writer": writer,
                                         **results}, indent=2))
        console.print(f"results saved to {args.json}")
    return 1 if any(r.get("error") for r in rows) or errors else 0


if __name__ == "__main__":
    sys.exit(main())
