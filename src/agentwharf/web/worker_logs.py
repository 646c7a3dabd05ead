"""A served version's worker log tail for the console (CAN_MANAGE).

Read from the files the supervisor writes (``<home>/logs/workers/<endpoint>/<entity>-<n>.log``,
and ``<entity>-build.log`` for its environment build). The Databricks-shaped REST for served
model logs (``GET /api/2.0/serving-endpoints/{name}/served-models/{entity}/logs``) is another
branch's; when it lands, ``tail`` becomes a call to it and nothing else here changes.
"""

from __future__ import annotations

from pathlib import Path

from agentwharf.children import log_tail

#: How much of the end of a log the console shows.
TAIL_BYTES = 64 * 1024


def _folder(logs_dir: Path, endpoint: str) -> Path:
    return logs_dir / "workers" / endpoint


def tail(logs_dir: Path, endpoint: str, entity: str, replica: int | None) -> str:
    """The end of worker ``replica``'s log (``None``: the environment build's log). The names
    come from the database (the caller checked the entity is the endpoint's), not the URL."""
    name = f"{entity}-build.log" if replica is None else f"{entity}-{replica}.log"
    text = log_tail(_folder(logs_dir, endpoint) / name, TAIL_BYTES)
    return text or "(this log is empty or does not exist yet)"


def has_build_log(logs_dir: Path, endpoint: str, entity: str) -> bool:
    return (_folder(logs_dir, endpoint) / f"{entity}-build.log").exists()
