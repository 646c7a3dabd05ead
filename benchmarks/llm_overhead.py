"""What the platform adds to one LLM call: the scripted OpenAI-compatible provider of the tests
called directly and through an LLM endpoint of a real platform, in the same run.

One request at a time (latency, not throughput), the two paths alternating so both see the same
machine: a chat completion (p50, p99), and a streamed one (time to the first ``data:`` event).
The platform's path is all of it: authentication, the rate limiter, MLflow's AI Gateway provider
call, the trace record spooled and fsync'd before the answer (durable, as for agents), the answer.

    .venv/bin/python benchmarks/llm_overhead.py [--calls 2000]     # or: benchmarks/run.py --only llm-overhead
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from procs import cpu_seconds, free_port  # noqa: E402
from systems import PY, child_env, started  # noqa: E402
from tests.llm_provider import ScriptedProvider  # noqa: E402

ENDPOINT, MODEL = "bench-llm", "bench-model"
MESSAGES = [{"role": "user", "content": "hello"}]
#: The platform must add at most this much, at p50 and to the first streamed event.
TARGET_MS = 2.0
#: ``procs.cpu_seconds``' name for the platform's own process.
PLATFORM_ROLE = "platform (gateway, LLM endpoint)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@contextlib.contextmanager
def platform(tmp: Path, provider: ScriptedProvider) -> Iterator[tuple[str, str, int]]:
    port = free_port()
    base, home = f"http://127.0.0.1:{port}", tmp / "home"
    command = [PY, "-m", "agentwharf.cli.main", "up", "--home", str(home), "--port", str(port)]
    with started("agentwharf-llm", command, tmp, child_env()) as service:
        service.wait_http(f"{base}/healthz", timeout=240)
        token = (home / "admin.token").read_text().strip()
        body = {"name": ENDPOINT, "config": {"served_entities": [{"name": "main", "external_model": {
            "name": MODEL, "provider": "custom", "task": "llm/v1/chat",
            "openai_config": {"openai_api_base": provider.api_base, "openai_api_key_plaintext": provider.api_key}}}]}}
        created = httpx.post(f"{base}/api/2.0/serving-endpoints", json=body, timeout=120,
                             headers={"Authorization": f"Bearer {token}"})
        if created.status_code != 200:
            raise service.fail(f"creating the LLM endpoint answered {created.status_code}: {created.text[:500]}")
        yield base, token, service.pid


def _platform_cpu_s(pid: int) -> float:
    """CPU seconds the platform's own process (its gateway and LLM calls) has used so far."""
    return cpu_seconds(pid).get(PLATFORM_ROLE, 0.0)


def fdatasync_ms(folder: Path, count: int = 300) -> float:
    """p50 of one small append + ``fdatasync`` on the file system of ``folder``: what the spool
    pays, once per un-grouped request, to make a record durable before its answer leaves."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            times.append(_timed(lambda: (os.write(fd, b"x" * 2048), os.fdatasync(fd))))
    finally:
        os.close(fd)
        path.unlink()
    return percentile(times, 50)


def _timed(call: Callable[[], None]) -> float:
    started_at = time.perf_counter()
    call()
    return (time.perf_counter() - started_at) * 1000


def _first_event(client: httpx.Client, url: str, body: dict) -> None:
    with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"POST {url} answered {response.status_code}")
        for line in response.iter_lines():
            if line.startswith("data:"):
                return  # the rest of the stream is read when the context closes
    raise RuntimeError(f"POST {url} streamed no event")


def measure(tmp: Path, calls: int = 2000, streams: int = 500, warmup: int = 200) -> dict:
    """Milliseconds per call, direct and through the platform, for plain and streamed calls."""
    key = f"sk-bench-{secrets.token_hex(16)}"
    with ScriptedProvider(key, tmp) as provider, platform(tmp, provider) as (base, token, pid):
        direct = httpx.Client(base_url=provider.api_base, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        through = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)
        plain = ({"model": MODEL, "messages": MESSAGES}, {"messages": MESSAGES})
        paths = ((direct, "/chat/completions"), (through, f"/serving-endpoints/{ENDPOINT}/invocations"))
        check = through.post(paths[1][1], json=plain[1])
        if check.status_code != 200 or check.json()["choices"][0]["message"]["content"] != "echo: hello":
            raise RuntimeError(f"the platform answered {check.status_code}: {check.text[:500]}")
        results: dict[str, list[float]] = {"direct": [], "platform": [], "direct_ttft": [], "platform_ttft": []}
        cpu: dict[str, float] = {}
        for i in range(warmup + calls):
            if i == warmup:
                cpu["calls"] = _platform_cpu_s(pid)
            for label, (client, path), body in zip(("direct", "platform"), paths, plain):
                elapsed = _timed(lambda: client.post(path, json=body).raise_for_status())
                if i >= warmup:
                    results[label].append(elapsed)
        cpu["calls"] = _platform_cpu_s(pid) - cpu["calls"]
        for i in range(warmup // 4 + streams):
            if i == warmup // 4:
                cpu["streams"] = _platform_cpu_s(pid)
            for label, (client, path), body in zip(("direct_ttft", "platform_ttft"), paths, plain):
                elapsed = _timed(lambda: _first_event(client, path, {**body, "stream": True}))
                if i >= warmup // 4:
                    results[label].append(elapsed)
        cpu["streams"] = _platform_cpu_s(pid) - cpu["streams"]
        direct.close()
        through.close()
    summary = {f"{label}_{q}": percentile(values, q) for label, values in results.items() for q in (50, 99)}
    summary.update(calls=calls, streams=streams, fdatasync_50=fdatasync_ms(tmp),
                   added_p50=summary["platform_50"] - summary["direct_50"],
                   added_p99=summary["platform_99"] - summary["direct_99"],
                   added_ttft_p50=summary["platform_ttft_50"] - summary["direct_ttft_50"],
                   platform_cpu_us_per_call=cpu["calls"] / calls * 1e6,
                   platform_cpu_us_per_stream=cpu["streams"] / streams * 1e6,
                   mean_direct=statistics.fmean(results["direct"]), mean_platform=statistics.fmean(results["platform"]))
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="awbench-llm-") as tmp:
        result = measure(Path(tmp), args.calls, args.streams)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
