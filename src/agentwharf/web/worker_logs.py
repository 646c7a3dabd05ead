"""A served version's log tail for the console (CAN_MANAGE): a worker process's log, or its
environment build's, where ``serving.worker_logs`` says they are."""

from __future__ import annotations

from pathlib import Path

from agentwharf.serving import worker_logs

#: How much of the end of a log the console shows.
TAIL_BYTES = 64 * 1024


def tail(logs_dir: Path, endpoint: str, entity: str, replica: int | None) -> str:
    """The end of worker ``replica``'s log (``None``: the environment build's log). The names
    come from the database (the caller checked the entity is the endpoint's), not the URL."""
    if replica is None:
        path = worker_logs.environment_log_path(logs_dir, endpoint, entity)
    else:
        path = logs_dir / "workers" / endpoint / f"{entity}-{replica}.log"
    return worker_logs.tail(path, TAIL_BYTES) or "(this log is empty or does not exist yet)"


def has_build_log(logs_dir: Path, endpoint: str, entity: str) -> bool:
    return worker_logs.environment_log_path(logs_dir, endpoint, entity).exists()
