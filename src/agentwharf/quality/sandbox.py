"""Running someone's custom scorer code without trusting it (the parent side of
``sandbox_runner``).

Every custom ``@scorer`` gets processes of its own (a ``Lane`` per scorer and environment), so
one that raises, loops or allocates without bound holds up nothing but itself:

- a runner process per lane, started with an environment built from nothing (no token, no
  database URL, no platform variable; see ``sandbox_environment``), in a scratch folder of its
  own, dying with the scoring process (``PR_SET_PDEATHSIG``);
- inside it, the limits ``sandbox_runner`` sets (memory, CPU per call, Landlock);
- here, the wall-clock timeout of each call: past it the runner is killed and replaced;
- a breaker: after ``BREAKER_FAILURES`` timeouts or crashes in a row, the lane rests for
  ``BREAKER_SECONDS`` and the traces it would have scored meanwhile get an error assessment
  saying so, rather than a queue that grows without end; so does a backlog past ``max_backlog``.

Whatever happens, each (trace, scorer) ends with feedback: the scorer's own, MLflow's record of
its exception, or an error assessment made here (``error_feedback``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from agentwharf.children import die_with_parent, open_log

log = logging.getLogger("agentwharf.quality.sandbox")

_HEADER = struct.Struct(">I")
BREAKER_FAILURES = 3
BREAKER_SECONDS = 30.0
#: Variables of the parent's environment a runner keeps: where programs and locales are.
_KEPT = ("PATH", "LANG", "LC_ALL", "TZ")


class ScorerFailed(Exception):
    """The sandbox, not the scorer, ended this call (timeout, crash, suspension)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Limits:
    timeout_seconds: float = 10.0
    cpu_seconds: float = 10.0
    memory_bytes: int = 512 * 1024 * 1024
    #: Calls before a runner is replaced by a fresh one (its lifetime CPU limit is sized for them).
    max_calls: int = 10_000
    #: Landlock (files, TCP, signals) where the kernel has it.
    confine: bool = True
    max_backlog: int = 2_000


def sandbox_environment(scratch: Path, pythonpath: str | None, environ: dict[str, str]) -> dict[str, str]:
    """A runner's whole environment: nothing of the platform's but where programs are."""
    env = {key: environ[key] for key in _KEPT if key in environ}
    env.update({
        "HOME": str(scratch), "TMPDIR": str(scratch), "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
        "MALLOC_ARENA_MAX": "2",
        # MLflow: this process may rebuild a custom scorer from its source (it is the executor),
        # traces nothing, tracks to its scratch folder and reports no telemetry.
        "MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS": "true", "MLFLOW_GENAI_EVAL_ENABLE_SCORER_TRACING": "false",
        "MLFLOW_TRACKING_URI": (scratch / "mlruns").as_uri(), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
        "MLFLOW_MODEL_CATALOG_URI": "",
    })
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def error_feedback(scorer: str, code: str, message: str) -> dict:
    """The error assessment of a call the sandbox ended, in ``Feedback.to_dictionary`` form."""
    from mlflow.entities import AssessmentError, Feedback
    from mlflow.genai.evaluation.utils import make_code_type_assessment_source

    return Feedback(name=scorer, source=make_code_type_assessment_source(scorer),
                    error=AssessmentError(error_code=code, error_message=message)).to_dictionary()


class ScorerRunner:
    """One runner process for one scorer: start, call with a deadline, kill."""

    def __init__(self, scorer_name: str, serialized: str, python: str, pythonpath: str | None, limits: Limits,
                 log_path: Path, environ: dict[str, str], read_paths: list[str]):
        self.scorer_name, self.serialized, self.python, self.pythonpath = scorer_name, serialized, python, pythonpath
        self.limits, self.log_path, self.environ, self.read_paths = limits, log_path, environ, read_paths
        self.process: subprocess.Popen | None = None
        self.scratch: Path | None = None
        self.calls = 0
        self.confinement: dict = {}
        self._ids = 0

    def start(self, timeout: float = 120.0) -> None:
        """Raises:
            ScorerFailed: the runner could not build the scorer or did not start.
        """
        self.scratch = Path(tempfile.mkdtemp(prefix="agentwharf-scorer-"))
        with open_log(self.log_path) as out:
            out.write(f"\n--- runner for scorer {self.scorer_name!r} ({self.python}) at {time.strftime('%H:%M:%S')} ---\n".encode())
            self.process = subprocess.Popen(
                [self.python, "-m", "agentwharf.quality.sandbox_runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=out, cwd=self.scratch, env=sandbox_environment(self.scratch, self.pythonpath, self.environ),
                preexec_fn=die_with_parent, start_new_session=True)
        limits = self.limits
        self._send({"scorer": self.serialized, "memory_bytes": limits.memory_bytes, "cpu_seconds": limits.cpu_seconds,
                    "max_calls": limits.max_calls, "confine": limits.confine, "scratch": str(self.scratch),
                    "read_paths": self.read_paths})
        answer = self._receive(timeout, "start")
        if "fatal" in answer:
            self.stop()
            raise ScorerFailed("SCORER_LOAD_ERROR", f"The scorer {self.scorer_name!r} could not be built: {answer['fatal']}")
        self.confinement = answer.get("confinement", {})

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def call(self, trace_json: str) -> list[dict]:
        """The scorer's feedbacks on one trace.

        Raises:
            ScorerFailed: the call timed out or the process died (it is stopped either way).
        """
        self._ids += 1
        self.calls += 1
        self._send({"id": self._ids, "trace": trace_json})
        answer = self._receive(self.limits.timeout_seconds, "call")
        return answer["feedbacks"]

    def _send(self, message: dict) -> None:
        data = orjson.dumps(message)
        try:
            self.process.stdin.write(_HEADER.pack(len(data)) + data)
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died("while it was sent the trace") from None

    def _receive(self, timeout: float, what: str) -> dict:
        stream = self.process.stdout
        deadline = time.monotonic() + timeout
        header = self._read_exact(stream, _HEADER.size, deadline, what, timeout)
        (size,) = _HEADER.unpack(header)
        return orjson.loads(self._read_exact(stream, size, deadline, what, timeout))

    def _read_exact(self, stream, size: int, deadline: float, what: str, timeout: float) -> bytes:
        chunks, got = [], 0
        fd = stream.fileno()
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.stop()
                if what == "start":
                    raise ScorerFailed("SCORER_LOAD_ERROR", f"The scorer {self.scorer_name!r}'s process did not start "
                                                            f"within {timeout:.0f}s")
                raise ScorerFailed("SCORER_TIMEOUT", f"The scorer {self.scorer_name!r} did not finish within "
                                                     f"{timeout:g}s (AGENTWHARF_SCORER_TIMEOUT_SECONDS); its process "
                                                     "was stopped")
            chunk = os.read(fd, size - got)
            if not chunk:
                raise self._died("while scoring" if what == "call" else "while starting")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _died(self, when: str) -> ScorerFailed:
        code = self.process.wait(5) if self.process is not None else None
        self.stop()
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = {"SIGXCPU": f"it used more than its {self.limits.cpu_seconds:g}s of CPU time "
                              "(AGENTWHARF_SCORER_CPU_SECONDS)",
                   "SIGKILL": "it was killed (out of memory?)"}.get(name, f"signal {name}")
        else:
            why = f"exit code {code}"
        return ScorerFailed("SCORER_CRASHED", f"The scorer {self.scorer_name!r}'s process ended {when}: {why}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


@dataclass
class Job:
    #: None: only start the runner (``Lane.prestart``).
    trace_json: str | None
    #: Called once with the scorer's feedbacks (dicts) whatever happens.
    done: Callable[[list[dict]], None]


@dataclass
class Lane:
    """One custom scorer in one environment: a runner and the calls waiting for it, served in
    order by a thread of its own."""

    scorer_name: str
    serialized: str
    python: str
    pythonpath: str | None
    limits: Limits
    log_path: Path
    environ: dict[str, str]
    read_paths: list[str] = field(default_factory=list)
    jobs: queue.Queue = field(default_factory=queue.Queue)
    failures: int = 0
    resting_until: float = 0.0
    last_error: str | None = None
    closed: bool = False

    def __post_init__(self):
        self.runner: ScorerRunner | None = None
        self.thread = threading.Thread(target=self._serve, name=f"scorer-lane-{self.scorer_name}", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> None:
        if self.jobs.qsize() >= self.limits.max_backlog:
            job.done([error_feedback(self.scorer_name, "SCORER_BACKLOG",
                                     f"{self.jobs.qsize()} traces are waiting for the scorer {self.scorer_name!r} already "
                                     "(it is slower than the traffic); this one was not scored")])
            return
        self.jobs.put(job)

    @property
    def backlog(self) -> int:
        return self.jobs.qsize()

    def close(self) -> None:
        self.closed = True
        self.jobs.put(None)

    def _serve(self) -> None:
        while (job := self.jobs.get()) is not None:
            try:
                job.done(self._score(job.trace_json))
            except Exception as error:  # never lose a job: its trace gets an error assessment
                log.exception("scorer lane %s failed a call", self.scorer_name)
                job.done([error_feedback(self.scorer_name, "SCORER_ERROR", f"{type(error).__name__}: {error}")])
        if self.runner is not None:
            self.runner.stop()

    def _score(self, trace_json: str | None) -> list[dict]:
        if trace_json is None:
            with contextlib.suppress(ScorerFailed):
                self._runner()
            return []
        if time.monotonic() < self.resting_until:
            return [error_feedback(self.scorer_name, "SCORER_SUSPENDED",
                                   f"The scorer {self.scorer_name!r} is suspended until its process stops failing "
                                   f"({self.failures} failures in a row; last: {self.last_error})")]
        try:
            feedbacks = self._runner().call(trace_json)
        except ScorerFailed as failure:
            self.failures += 1
            self.last_error = failure.message
            log.warning("custom scorer %r: %s", self.scorer_name, failure.message)
            if self.failures >= BREAKER_FAILURES:
                self.resting_until = time.monotonic() + BREAKER_SECONDS
            return [error_feedback(self.scorer_name, failure.code, failure.message)]
        self.failures = 0
        return feedbacks

    def _runner(self) -> ScorerRunner:
        if self.runner is None or not self.runner.alive or self.runner.calls >= self.limits.max_calls:
            if self.runner is not None:
                self.runner.stop()
            self.runner = ScorerRunner(self.scorer_name, self.serialized, self.python, self.pythonpath, self.limits,
                                       self.log_path, self.environ, self.read_paths)
            self.runner.start()
        return self.runner

    def prestart(self) -> None:
        """Start the runner now (a scorer was just started), so the first trace does not wait
        for MLflow to import."""
        self.jobs.put(Job(None, lambda _: None))
