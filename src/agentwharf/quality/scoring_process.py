"""The scoring process: online scoring (``online``) in a process of its own, and the platform's
handle on it (start it when an experiment has active scorers, restart it if it dies, stop it
with the platform).

    python -m agentwharf.quality.scoring_process --database URL --artifacts DIR ...

Why a process: judges parse LLM answers and MLflow builds feedback in Python; at 50 traces a
second that is CPU the gateway must not share a GIL with. It reaches MLflow's tables directly
(as the writer does) and the platform's LLM endpoints over HTTP with the monitor credential,
which it reads on stdin. Custom scorer code never runs in it (see ``sandbox``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agentwharf.children import die_with_parent, open_log

log = logging.getLogger("agentwharf.quality")

MARKER = "agentwharf.quality.scoring_process"


@dataclass(frozen=True)
class ScoringConfig:
    """What the platform tells the scoring process (from ``PlatformSettings``)."""

    database_uri: str
    artifacts_dir: Path
    logs_dir: Path
    runtime_dir: Path
    served_environments: Path
    base_url: str
    judge_endpoint: str | None
    timeout_seconds: float
    cpu_seconds: float
    memory_bytes: int
    confine: bool
    judge_threads: int
    max_backlog_seconds: float
    mlflow_checkpoint: bool

    def arguments(self) -> list[str]:
        args = ["--database", self.database_uri, "--artifacts", str(self.artifacts_dir), "--logs", str(self.logs_dir),
                "--runtime", str(self.runtime_dir), "--served-environments", str(self.served_environments),
                "--base-url", self.base_url, "--timeout", str(self.timeout_seconds), "--cpu", str(self.cpu_seconds),
                "--memory", str(self.memory_bytes), "--judge-threads", str(self.judge_threads),
                "--max-backlog-seconds", str(self.max_backlog_seconds)]
        if self.judge_endpoint:
            args += ["--judge-endpoint", self.judge_endpoint]
        if not self.confine:
            args.append("--no-confine")
        if self.mlflow_checkpoint:
            args.append("--mlflow-checkpoint")
        return args


def scoring_environment(base: dict[str, str], judge_endpoint: str | None, base_url: str) -> dict[str, str]:
    """The scoring process's environment (the monitor credential comes on stdin)."""
    env = dict(base)
    env.update({
        # For MLflow this process is a server process: it deserializes custom @scorer code as
        # inert metadata and never runs it (MLflow's _is_tracking_server_process).
        "_MLFLOW_SERVER_BOOT_ID": secrets.token_hex(8),
        "MLFLOW_TRACKING_URI": base_url,
        "MLFLOW_GENAI_EVAL_ENABLE_SCORER_TRACING": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS", None)
    # MLflow's gateway provider looks its models up in a catalog it fetches from GitHub (three
    # tries, back-off): seconds before the first judge call of each run, on a machine that may
    # have no route out. The catalog MLflow ships serves (an operator's setting wins).
    env.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
    if judge_endpoint:
        env["MLFLOW_GENAI_JUDGE_DEFAULT_MODEL"] = f"gateway:/{judge_endpoint}"
    return env


class ScoringProcess:
    """The platform's handle: started on demand, restarted if it dies, drained on stop."""

    def __init__(self, config: ScoringConfig, environ: dict[str, str], credential):
        self.config = config
        self.environ = environ
        #: () -> a fresh monitor credential for this platform run.
        self.credential = credential
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self.log_path = config.logs_dir / "scoring.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        env = scoring_environment(self.environ, self.config.judge_endpoint, self.config.base_url)
        with open_log(self.log_path) as out:
            self.process = subprocess.Popen([sys.executable, "-m", MARKER, *self.config.arguments()],
                                            stdin=subprocess.PIPE, stdout=out, stderr=out, env=env,
                                            preexec_fn=die_with_parent)
        self.process.stdin.write(self.credential().encode() + b"\n")
        self.process.stdin.close()
        log.info("online scoring started (pid %d)", self.process.pid)

    def ensure(self, wanted: bool) -> None:
        """Start it when scorers are active; restart it if it died."""
        if self.process is not None and self.process.poll() is not None:
            self.restarts += 1
            log.error("the scoring process exited with %s; restarting", self.process.returncode)
            self.process = None
        if wanted and self.process is None:
            self.start()

    async def stop(self, timeout: float = 20.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="agentwharf online scoring (started by the platform)")
    parser.add_argument("--database", required=True)
    parser.add_argument("--artifacts", required=True, type=Path)
    parser.add_argument("--logs", required=True, type=Path)
    parser.add_argument("--runtime", required=True, type=Path)
    parser.add_argument("--served-environments", required=True, type=Path)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--judge-endpoint")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--cpu", type=float, default=10.0)
    parser.add_argument("--memory", type=int, default=512 << 20)
    parser.add_argument("--judge-threads", type=int, default=16)
    parser.add_argument("--max-backlog-seconds", type=float, default=3600.0)
    parser.add_argument("--no-confine", action="store_true")
    parser.add_argument("--mlflow-checkpoint", action="store_true")
    args = parser.parse_args(argv)
    token = sys.stdin.readline().strip()
    # MLflow's judges read these: gateway:/ sends Basic (the token is the password), databricks:/
    # Databricks' variables. Both reach the platform, which knows the credential.
    os.environ.update({"MLFLOW_TRACKING_USERNAME": "agentwharf-monitor", "MLFLOW_TRACKING_PASSWORD": token,
                       "DATABRICKS_HOST": args.base_url, "DATABRICKS_TOKEN": token})
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from agentwharf.quality.online import OnlineScoring, Settings
    from agentwharf.quality.sandbox import Limits

    # `kill -USR1 <pid>` writes every thread's stack to the scoring log (a stuck judge, a lane).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    limits = Limits(timeout_seconds=args.timeout, cpu_seconds=args.cpu, memory_bytes=args.memory, confine=not args.no_confine)
    engine = OnlineScoring(Settings(database_uri=args.database, artifacts_dir=args.artifacts, logs_dir=args.logs,
                                    runtime_dir=args.runtime, served_environments=args.served_environments, limits=limits,
                                    judge_threads=args.judge_threads, max_backlog_seconds=args.max_backlog_seconds,
                                    mlflow_checkpoint=args.mlflow_checkpoint))
    log.info("online scoring: polling the scoring queue")
    engine.run(stop)
    log.info("online scoring stopped (%d results written)", engine.scored)


if __name__ == "__main__":
    main()
