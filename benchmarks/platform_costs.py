"""What the platform costs besides serving: its idle footprint, and the price of each model
running in its own environment (building one cold, reusing one, deploy to first answer).

One fresh platform home: the idle platform is measured first (processes and resident memory
of its whole process tree, after a quiet spell); then the EchoAgent is deployed twice with the
same requirements: version 1 builds its environment (cold: a new environment; uv's package
cache is whatever this machine has), version 2 reuses it (warm). Version 2 is deployed once the
platform has settled after version 1 (its CPU quiet for a second, as a second deploy minutes
later would find it): by then the warm spare worker of that environment has imported MLflow.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from procs import descendants, free_port, rss_mib
from systems import AW_MODEL, BODY, _client_env, child_env, mlflow_setup, started

HERE = Path(__file__).resolve().parent
PY = __import__("sys").executable
IDLE_SETTLE_SECONDS = 10.0
#: Targets from the issues, checked in the report.
TARGET_IDLE_MIB = 800
TARGET_IDLE_PROCESSES = 6
TARGET_WARM_FIRST_ANSWER_S = 2.0
TARGET_UP_S = 10.0


def _cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks
        except (OSError, IndexError, ValueError):
            continue
    return total


def _settle(pid: int, timeout: float = 60.0) -> None:
    """Wait until the platform's whole process tree has used under 0.05 s of CPU in a second."""
    deadline = time.monotonic() + timeout
    before = _cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = _cpu_seconds(pid)
        if now - before < 0.05:
            return
        before = now


def _footprint(pid: int) -> dict:
    tree = [pid, *descendants(pid)]
    return {"processes": len(tree), "rss_mib": round(sum(rss_mib(p) or 0 for p in tree))}


def _first_answer(base: str, headers: dict, endpoint: str, entity: str, version: str) -> float:
    """From calling ``agents.deploy`` to the version's first 200. The harness's own client is
    made before the clock starts: a new httpx client loads its CA bundle (~50-100 ms here),
    a cost of this harness, not of the platform."""
    from agentwharf import agents

    url = f"{base}/serving-endpoints/{endpoint}/served-models/{entity}/invocations"
    with httpx.Client(headers=headers, timeout=60) as client:
        started_at = time.monotonic()
        agents.deploy(AW_MODEL, version)
        while client.post(url, json=BODY).status_code != 200:
            if time.monotonic() - started_at > 900:
                raise RuntimeError(f"{url} never answered after deploy")
            time.sleep(0.05)
        return time.monotonic() - started_at


def _build_seconds(build_log: Path) -> tuple[float | None, bool]:
    text = build_log.read_text()
    done = re.findall(r"done in ([0-9.]+)s", text)
    return (float(done[-1]) if done else None), "reusing environment" in text


def measure(tmp: Path) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = tmp / "home"
    command = [PY, "-m", "agentwharf.cli.main", "up", "--home", str(home), "--port", str(port)]
    launched = time.monotonic()
    with started("agentwharf-costs", command, tmp, child_env()) as service:
        service.wait_http(f"{base}/healthz", timeout=180, interval=0.05)
        up_first = time.monotonic() - launched
        time.sleep(IDLE_SETTLE_SECONDS)
        idle = _footprint(service.pid)
        token = (home / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        versions = [mlflow_setup(tmp, base, "/benchmarks/costs", "--register", AW_MODEL, token=token)["version"] for _ in range(2)]
        endpoint = "agents_" + AW_MODEL.replace(".", "-")
        results = {"idle": idle}
        with _client_env(base, token):
            for label, version in zip(("cold", "warm"), versions):
                if label == "warm":
                    _settle(service.pid)
                entity = f"{AW_MODEL.replace('.', '-')}_{version}"
                seconds = _first_answer(base, headers, endpoint, entity, version)
                built, reused = _build_seconds(home / "logs" / "workers" / endpoint / f"{entity}-build.log")
                results[label] = {"deploy_to_first_answer_s": round(seconds, 1), "build_s": built, "reused": reused}
        results["serving"] = _footprint(service.pid)
    # The same home started again: what `agentwharf up` takes on a warm machine (Python's
    # bytecode and the page cache warm, the home's database and MLflow's tables there).
    launched = time.monotonic()
    with started("agentwharf-costs-restart", command, tmp, child_env()) as service:
        service.wait_http(f"{base}/healthz", timeout=180, interval=0.05)
        results["up_s"] = {"first": round(up_first, 1), "again": round(time.monotonic() - launched, 1)}
    return results


def report(results: dict, console) -> None:
    idle, cold, warm = results["idle"], results["cold"], results["warm"]
    console.print(f"agentwharf idle footprint: {idle['processes']} processes, {idle['rss_mib']} MiB resident "
                  f"(with one version served: {results['serving']['processes']} processes, "
                  f"{results['serving']['rss_mib']} MiB)")
    build = f"{cold['build_s']:.1f} s" if cold["build_s"] is not None else "?"
    console.print(f"agentwharf model environment: built cold in {build}, deploy to first answer {cold['deploy_to_first_answer_s']} s; "
                  f"reused {'(no build)' if warm['reused'] else '(built again?)'}, deploy to first answer "
                  f"{warm['deploy_to_first_answer_s']} s")
    up = results["up_s"]
    console.print(f"agentwharf up to healthy: {up['first']} s for a new home, {up['again']} s for the same home again")
    for what, passed, value in (
        (f"agentwharf up to healthy on a warm machine <= {TARGET_UP_S:.0f} s", up["again"] <= TARGET_UP_S, f"{up['again']} s"),
        (f"idle resident memory <= {TARGET_IDLE_MIB} MiB", idle["rss_mib"] <= TARGET_IDLE_MIB, f"{idle['rss_mib']} MiB"),
        (f"idle processes <= {TARGET_IDLE_PROCESSES}", idle["processes"] <= TARGET_IDLE_PROCESSES, str(idle["processes"])),
        ("a second version with the same requirements reuses the environment", warm["reused"], str(warm["reused"])),
        (f"deploy to first answer with a warm environment <= {TARGET_WARM_FIRST_ANSWER_S:.0f} s",
         warm["deploy_to_first_answer_s"] <= TARGET_WARM_FIRST_ANSWER_S, f"{warm['deploy_to_first_answer_s']} s"),
    ):
        console.print(f"agentwharf target {'[green]PASS[/]' if passed else '[bold red]FAIL[/]'} {what}: {value}")
