"""Drive a URL with wrk and parse what it prints."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

THREADS = 2

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class WrkMissing(RuntimeError):
    pass


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: install it with `sudo apt-get install wrk` (or build it from https://github.com/wg/wrk) and run again.")
    return path


def post_script(path: Path, body: str, headers: dict[str, str] | None = None) -> Path:
    """A wrk Lua script that POSTs ``body`` as JSON (with extra ``headers``, e.g. a token)."""
    if "]]" in body:
        raise ValueError("body must not contain ']]'")
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [[{body}]]\n"
        'wrk.headers["Content-Type"] = "application/json"\n' + extra
    )
    return path


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    command: str
    raw: str

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def answered(self) -> int:
        return max(0, self.requests - self.errors)

    def as_dict(self) -> dict:
        return {**asdict(self), "errors": self.errors, "answered": self.answered}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse(raw: str, command: str = "") -> WrkResult:
    """Parse ``wrk --latency`` output; raises ValueError (with the output) if it is not there."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", raw, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", raw, re.M)
    percentiles = {int(p): _ms(v, u) for p, v, u in re.findall(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", raw, re.M)}
    if not total or not rps or 50 not in percentiles or 99 not in percentiles:
        raise ValueError(f"could not parse wrk output:\n{raw}")
    sockets = re.search(r"Socket errors:\s*connect (\d+), read (\d+), write (\d+), timeout (\d+)", raw)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", raw)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_ms(total.group(2), total.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=percentiles[50],
        p99_ms=percentiles[99],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        command=command,
        raw=raw,
    )


def run(url: str, script: Path, duration: int, connections: int, timeout_s: int | None = None) -> WrkResult:
    """``timeout_s``: wrk's ``--timeout`` (its default is 2 s). wrk never abandons a request that
    passes it: it keeps the connection waiting, adds one to its "timeout" count at every check
    (every 2 s) while the request is older, and leaves the answer, when it comes, out of the
    latencies. Under a load whose answers take seconds, set it above them, so latencies and
    the error count mean what they say."""
    timeout = [f"--timeout={timeout_s}s"] if timeout_s else []
    command = [require_wrk(), f"-t{THREADS}", f"-c{connections}", f"-d{duration}s", *timeout, "--latency", "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    shown = " ".join(["wrk", *command[1:]])
    if done.returncode != 0:
        raise RuntimeError(f"`{shown}` failed with code {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return parse(done.stdout, shown)
