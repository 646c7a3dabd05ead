"""Confining a process with Linux Landlock: what files it may read and write, no TCP, and no
signals or abstract Unix sockets outside itself. Unprivileged (no root, no container), one
ruleset per process, irreversible, inherited by its children.

Used by the sandbox of custom scorer code (``sandbox_runner``): after the runner has imported
what it needs, it may read the Python installation it runs from and the system's shared files,
write only its own scratch folder, and reach nothing over TCP. It cannot read the platform's
home (the database, tokens, keys), signal the platform, or call the platform's routes.

Landlock arrived in Linux 5.13 (files), 6.7 (TCP, ABI 4) and 6.12 (signals and abstract Unix
sockets, ABI 6); each part is used when the kernel has it. ``restrict`` reports which were.
See https://docs.kernel.org/userspace-api/landlock.html for the structures below.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# File system rights, by the ABI that introduced them.
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_V1 = (1 << 13) - 1  # execute .. make_sym
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_NET_BIND_TCP, _NET_CONNECT_TCP = 1 << 0, 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1

READ = _EXECUTE | _READ_FILE | _READ_DIR
#: Folders every Python process reads (libraries, certificates, locale, /proc/self).
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/sys", "/opt", "/nix")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI (0: none, or not Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(version))


def _fs_rights(abi: int) -> int:
    rights = _FS_V1
    if abi >= 2:
        rights |= _REFER
    if abi >= 3:
        rights |= _TRUNCATE
    if abi >= 5:
        rights |= _IOCTL_DEV
    return rights


def restrict(read_paths: Iterable[str], write_paths: Iterable[str]) -> dict[str, bool]:
    """Confine this process (and what it starts) for good: read and execute ``read_paths``,
    everything in ``write_paths``, nothing else on disk; no TCP; no signals or abstract Unix
    sockets outside the sandbox. Returns what the kernel enforced (``files``, ``network``,
    ``signals``); all False where Landlock is unavailable.

    Raises:
        OSError: the kernel has Landlock but refused the ruleset.
    """
    abi = abi_version()
    if abi < 1:
        return {"files": False, "network": False, "signals": False}
    libc = _libc()
    fs = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=fs, handled_access_net=(_NET_BIND_TCP | _NET_CONNECT_TCP) if abi >= 4 else 0,
                        scoped=(_SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL) if abi >= 6 else 0)
    # The structure grew with the ABI: pass the size this kernel knows.
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for paths, rights in ((read_paths, READ), (write_paths, fs)):
            for path in _existing(paths):
                _allow(libc, ruleset, path, rights if os.path.isdir(path) else rights & (_EXECUTE | _READ_FILE | _WRITE_FILE | _TRUNCATE))
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return {"files": True, "network": abi >= 4, "signals": abi >= 6}


def _existing(paths: Iterable[str]) -> list[str]:
    found = []
    for path in paths:
        real = os.path.realpath(path)
        if os.path.exists(real) and real not in found:
            found.append(real)
    return found


def _allow(libc, ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if libc.syscall(_ADD_RULE, ruleset, ctypes.c_uint32(_RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
