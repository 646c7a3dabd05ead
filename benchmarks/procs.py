"""Processes the harness starts: free ports, readiness, /proc inspection, and a stop that
leaves nothing behind (the process group, plus any descendant that made its own session)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _identity(pid: int) -> tuple[int, str] | None:
    fields = _stat(pid)
    return None if fields is None else (pid, fields[19])  # start time: survives pid reuse checks


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


#: What each process of the platform's tree is, by its command line.
_ROLES = (("quality.sandbox_runner", "custom scorer sandboxes"), ("quality.scoring_process", "scoring process"),
          ("tracing.writer", "spool writer"), ("serving.worker", "agent worker"), ("mlflow", "MLflow server"),
          ("cli.main up", "platform (gateway, LLM endpoint)"), ("agentserver_app", "AgentServer"))


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds used so far by ``root`` and its descendants, by role (processes that have
    exited are not counted: a sandbox runner replaced after a timeout, say)."""
    ticks = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    for pid in [root, *descendants(root)]:
        fields = _stat(pid)
        if fields is None:
            continue
        command = cmdline(pid)
        role = next((name for marker, name in _ROLES if marker in command), "other")
        used[role] = used.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return used


def cpu_us_per(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """CPU microseconds per request (or stream) of each role's processes, between two
    ``cpu_seconds`` readings."""
    return {role: 1e6 * (after[role] - before.get(role, 0.0)) / count for role in after if count}


class Service:
    """One started command in its own session (so its whole group can be signalled)."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str], cwd: Path):
        self.name = name
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def fail(self, message: str) -> RuntimeError:
        return RuntimeError(f"{self.name}: {message}\n--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.fail(f"exited with code {self.process.returncode} before {what}")
            with contextlib.suppress(httpx.HTTPError):
                if ready():
                    return
            time.sleep(interval)
        raise self.fail(f"no {what} within {timeout:.0f}s")

    def wait_http(self, url: str, timeout: float = 120.0, interval: float = 0.25) -> None:
        """Until ``GET url`` gets any 2xx answer."""
        self.wait_until(lambda: httpx.get(url, timeout=2).is_success, timeout, f"answer on {url}", interval)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM the group, wait, then SIGKILL the group and every descendant seen running."""
        spawned = [ident for pid in descendants(self.pid) if (ident := _identity(pid))]
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait()
        # Descendants in their own session (e.g. agentwharf's MLflow server) are not in our
        # group: give them a moment to follow their parent's clean shutdown, then kill.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_identity(pid) == (pid, start) for pid, start in spawned):
            time.sleep(0.2)
        for pid, start in spawned:
            if _identity(pid) != (pid, start):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:  # a session/group leader: take its whole group
                    os.killpg(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)


def python_speed_ms(rounds: int = 3) -> float:
    """Milliseconds of a fixed pure-Python workload (best of ``rounds``): this VM's speed for
    Python drifts by 2x between hours while a C server's does not, and every row but the bare
    echo is Python. Comparing this figure tells whether two runs ran on the same machine."""
    def workload() -> None:
        table: dict[str, int] = {}
        for i in range(1_000_000):
            key = f"k{i % 1000}"
            table[key] = table.get(key, 0) + i

    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        workload()
        best = min(best, time.perf_counter() - started)
    return best * 1000
