"""Enough file descriptors for the connections a serving process accepts.

Every client connection is a descriptor, and Debian starts processes with a soft limit of 1024
while the platform accepts ``max_connections`` (4096) at once. Past the soft limit asyncio stops
accepting for a second at a time ("socket.accept() out of system resource") and every other
open fails with it: a spool segment, a log file, a database connection. A process may raise its
own soft limit up to the hard one without privilege, as nginx (``worker_rlimit_nofile``) and Ray
do; the children it starts inherit it.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("agentwharf.runner")

#: Descriptors besides client connections: workers' sockets and logs, the spool, databases.
HEADROOM = 1024


def ensure_open_files(connections: int) -> int:
    """Raise this process's soft limit on open files to hold ``connections`` and the headroom,
    as far as the hard limit allows (a warning says what to do when it does not). Returns the
    soft limit in force."""
    wanted = connections + HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        soft = raised
    if soft < wanted:
        log.warning("this process may open %d files (hard limit), fewer than the %d connections it accepts "
                    "(AGENTWHARF_MAX_CONNECTIONS) need; raise it (ulimit -Hn, or LimitNOFILE= in a systemd unit) "
                    "or lower AGENTWHARF_MAX_CONNECTIONS", soft, wanted)
    return soft
