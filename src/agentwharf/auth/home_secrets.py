"""Secrets a platform keeps in its home, created on first start, readable only by its owner."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ADMIN_NAME = "admin"


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def private_key(path: Path, size: int = 32) -> bytes:
    """The key stored at ``path``, generated on first use."""
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(size)
    write_private(path, key)
    return key
