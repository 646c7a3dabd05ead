"""Agents that wait (``wait-250ms`` and ``stream-ttfe``): the benchmark's WaitAgent
(``wait_agent.py``) served by one Small agentwharf version, and the same wait on MLflow's
AgentServer, under as many concurrent connections as there are requests in flight.

``wait-250ms``: wrk holds ``connections`` requests in flight against a ``predict`` that waits
250 ms. The ideal throughput is ``connections / 0.25 s``; targets: >= 90% of it, p99 <= 1.3x
the wait. ``stream-ttfe``: ``sse_load`` holds ``connections`` SSE streams (20 tokens 25 ms apart)
through the one gateway and times each stream's first event; what the platform adds is that
time less the agent's own first token (25 ms). Targets: p50 <= 2 ms, p99 <= 10 ms added.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
from pathlib import Path

import sse_load
import systems
import wrk
from procs import cpu_seconds, cpu_us_per

HERE = Path(__file__).resolve().parent
WAIT_AGENT = HERE / "wait_agent.py"
WAIT_MODEL = "main.default.wait"
# wait_agent.py's own constants (the harness does not import MLflow, which that file does).
WAIT_S = 0.25
GAP_S = 0.025
TOKENS = 20
EXPECTED_TEXT = "Waited: hello"

TARGET_RATIO = 0.9
TARGET_P99_X_WAIT = 1.3
TARGET_ADDED_P50_MS = 2.0
TARGET_ADDED_P99_MS = 10.0

#: wrk's timeout for the wait rows: above any answer's time, so a slow answer counts in the
#: latencies and the throughput instead of as wrk's "timeouts" (see ``wrk.run``).
WRK_TIMEOUT_S = 60
#: Streams that start in the first seconds (a thousand requests arriving at once) are not timed.
STREAM_WARMUP_S = 3.0
#: wrk and the SSE client hold one socket per connection, the platform one more each, and
#: the default soft limit is often 1,024.
NOFILE = 65536


def raise_open_files_limit() -> None:
    """Open-file limit up to the hard one (children, the platform and wrk, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _verify(name: str, running: systems.Running) -> None:
    answer = systems.query(running.url, headers=running.headers)
    if answer.status_code != 200 or EXPECTED_TEXT not in answer.text:
        raise RuntimeError(f"{name}: answered {answer.status_code}, expected 200 with {EXPECTED_TEXT!r}:\n{answer.text[:500]}")


def _wait_load(system: str, running: systems.Running, tmp: Path, connections: int, duration: int) -> dict:
    script = wrk.post_script(tmp / f"post-{system}.lua", json.dumps(systems.BODY), running.headers)
    before = cpu_seconds(running.pid)
    result = wrk.run(running.url, script, duration, connections, timeout_s=WRK_TIMEOUT_S).as_dict()
    result["cpu_us_per_request"] = cpu_us_per(before, cpu_seconds(running.pid), result["answered"])
    ideal = connections / WAIT_S
    # Answers per second: the 2xx answers wrk counted, over its run.
    result["answered_rps"] = result["answered"] / result["seconds"]
    result.update(system=system, connections=connections, ideal_rps=ideal, ratio=result["answered_rps"] / ideal,
                  p99_x_wait=result["p99_ms"] / (WAIT_S * 1000))
    result["passed"] = (result["ratio"] >= TARGET_RATIO and result["p99_x_wait"] <= TARGET_P99_X_WAIT
                        and result["errors"] == 0)
    result.pop("raw", None)
    return result


def _stream_load(running: systems.Running, connections: int, duration: int) -> dict:
    body = {**systems.BODY, "stream": True}
    before = cpu_seconds(running.pid)
    found = sse_load.run(running.url, body, running.headers, connections, duration, warmup=STREAM_WARMUP_S)
    # Streams are counted from the end of the warm-up; the CPU over the whole load.
    found["cpu_us_per_stream"] = cpu_us_per(before, cpu_seconds(running.pid),
                                             round(found["streams_per_s"] * (duration + STREAM_WARMUP_S)))
    firsts = found.pop("first_event_s")
    if not firsts:
        raise RuntimeError(f"no stream answered: {found['errors'][:3]}")
    ms = [1000 * s for s in firsts]
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    added50, added99 = p50 - GAP_S * 1000, p99 - GAP_S * 1000
    return {**found, "errors": len(found["errors"]), "error_samples": found["errors"][:3], "connections": connections,
            "first_event_p50_ms": p50, "first_event_p99_ms": p99, "added_p50_ms": added50, "added_p99_ms": added99,
            "agent_first_token_ms": GAP_S * 1000, "tokens": TOKENS,
            "passed": added50 <= TARGET_ADDED_P50_MS and added99 <= TARGET_ADDED_P99_MS and not found["errors"]}


def measure(tmp: Path, wait: bool, stream: bool, wait_connections: list[int], stream_connections: list[int],
            duration: int) -> dict:
    """Both rows' lines: agentwharf's (one platform for both rows), then AgentServer's."""
    raise_open_files_limit()
    out: dict = {"wait": [], "stream": [], "wait_s": WAIT_S, "gap_s": GAP_S, "load_average_before": os.getloadavg()}
    for name in ("agentwharf", "agentserver"):
        (tmp / name).mkdir()
    with systems.agentwharf(tmp / "agentwharf", agent=WAIT_AGENT, model=WAIT_MODEL) as running:
        _verify("agentwharf", running)
        for connections in wait_connections if wait else []:
            out["wait"].append(_wait_load("agentwharf", running, tmp, connections, duration))
        for connections in stream_connections if stream else []:
            out["stream"].append({"system": "agentwharf", **_stream_load(running, connections, duration)})
    if wait:
        with systems.agentserver(tmp / "agentserver", agent_module="agentserver_wait_agent") as running:
            _verify("agentserver", running)
            out["wait"].append(_wait_load("agentserver", running, tmp, max(wait_connections), duration))
    out["load_average_after"] = os.getloadavg()
    return out


if __name__ == "__main__":  # the rows alone, JSON out
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="awbench-waiting-") as scratch, contextlib.suppress(KeyboardInterrupt):
        print(json.dumps(measure(Path(scratch), True, True, [1000], [1000], args.duration), indent=2))
