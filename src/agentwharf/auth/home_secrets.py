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


def close_to_others(folder: Path) -> None:
    """Make ``folder`` and everything in it its owner's alone (0700 folders, files without
    group and other bits): a home made by an older version, or files an operator copied in,
    are closed on the next start."""
    folder.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if mode & 0o077 and not os.path.islink(path):
                os.chmod(path, mode & 0o700)
    os.chmod(folder, 0o700)


def private_key(path: Path, size: int = 32) -> bytes:
    """The key stored at ``path``, generated on first use."""
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(size)
    write_private(path, key)
    return key
