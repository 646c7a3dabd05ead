"""One custom scorer's code, in a process of its own (started by ``sandbox.ScorerRunner``).

    python -m agentwharf.quality.sandbox_runner        # framed JSON on stdin and stdout

The first message names the scorer (MLflow's serialized ``@scorer``: its source is run here, by
MLflow's own ``Scorer.model_validate``) and the limits. The runner imports what it needs, builds
the scorer, then limits itself for good before any of the scorer's code is called:

- memory: the address space may grow by ``memory_bytes`` past what start-up used (RLIMIT_AS; an
  allocation beyond it raises ``MemoryError`` in the scorer, which MLflow records as its error);
- CPU: ``cpu_seconds`` per call (RLIMIT_CPU, re-armed before each call; past it the kernel ends
  the process), under a hard limit for the runner's whole life;
- files, network, signals: Landlock (see ``landlock``), where the kernel has it: read-only
  Python and system files, its own scratch folder, no TCP, no signals outside itself.

Its environment holds no credential of the platform's (the parent builds it from nothing). Each
further message is one trace (``Trace.to_json()``); the answer is the scorer's feedbacks, made by
MLflow's evaluation harness exactly as ``mlflow.genai.evaluate`` makes them (errors included).
The parent enforces the wall-clock timeout: it kills this process.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import sys

_HEADER = struct.Struct(">I")


def read_message(stream) -> dict | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    return json.loads(stream.read(size))


def write_message(stream, message: dict) -> None:
    data = json.dumps(message, default=str).encode()
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _limit(config: dict) -> dict:
    """Memory and the runner's lifetime CPU (hard limits: the scorer cannot raise them), core
    dumps and file sizes; then Landlock. Returns what Landlock enforced."""
    memory = _address_space() + int(config["memory_bytes"])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    lifetime = int(_cpu_used() + config["cpu_seconds"] * (config["max_calls"] + 1)) + 5
    resource.setrlimit(resource.RLIMIT_CPU, (lifetime, lifetime))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, 64 << 20))
    if not config.get("confine", True):
        return {"files": False, "network": False, "signals": False}
    from agentwharf.quality import landlock

    readable = [*landlock.SYSTEM_READ, sys.prefix, sys.base_prefix, sys.exec_prefix, "/dev",
                *(p for p in sys.path if p), *config.get("read_paths", [])]
    return landlock.restrict(readable, [config["scratch"], "/dev/null"])


def _arm_cpu(cpu_seconds: float) -> None:
    # The soft limit per call; SIGXCPU (which ends the process) past it.
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = min(hard, int(_cpu_used() + cpu_seconds) + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def eval_item(trace):
    """The evaluation row of a live trace, as ``mlflow.genai.evaluate(data=traces)`` makes it
    in development: the root span's inputs and outputs, and the trace (MLflow's own online
    scoring passes only the trace, so a custom ``def f(inputs, outputs)`` would get None)."""
    from mlflow.genai.evaluation.entities import EvalItem

    root = trace.data._get_root_span()
    return EvalItem(request_id=trace.info.trace_id, inputs=root.inputs if root is not None else None,
                    outputs=root.outputs if root is not None else None, expectations={}, trace=trace)


def explain(feedback, memory_bytes: int) -> None:
    """An error MLflow recorded with an empty message (``MemoryError()`` has none) gets the
    exception's name from its stack trace, and the limit behind a ``MemoryError``."""
    error = feedback.error
    if error is None or error.error_message:
        return
    lines = [line for line in (error.stack_trace or "").strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "the scorer raised an exception without a message"
    if last.startswith("MemoryError"):
        last += (f": the scorer needed more than its {memory_bytes / 2**20:.0f} MiB of memory "
                 "(AGENTWHARF_SCORER_MEMORY_BYTES)")
    error.error_message = last


def main() -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    # The scorer's own prints go to the log, never into the protocol.
    sys.stdout = sys.stderr
    config = read_message(stdin)
    if config is None:
        return
    from mlflow.entities import Trace
    from mlflow.genai.evaluation.harness import _compute_eval_scores
    from mlflow.genai.scorers import Scorer

    try:
        scorer = Scorer.model_validate_json(config["scorer"])
    except Exception as error:  # its source does not even define a function
        write_message(stdout, {"fatal": f"{type(error).__name__}: {error}"})
        return
    try:
        confinement = _limit(config)
    except OSError as error:
        write_message(stdout, {"fatal": f"could not confine the scorer's process: {error}"})
        return
    write_message(stdout, {"ready": True, "confinement": confinement, "pid": os.getpid()})
    while (message := read_message(stdin)) is not None:
        _arm_cpu(config["cpu_seconds"])
        trace = Trace.from_json(message["trace"])
        result = _compute_eval_scores(eval_item=eval_item(trace), scorers=[scorer])
        for feedback in result.assessments:
            explain(feedback, config["memory_bytes"])
        write_message(stdout, {"id": message["id"], "feedbacks": [f.to_dictionary() for f in result.assessments]})


if __name__ == "__main__":
    main()
