"""A gateway process's way to the workers: what the supervisor is to the platform's own gateway.

The control process's supervisor runs the workers and publishes the addresses of those that answer
(``published``; Unix sockets, or TCP with each worker's handshake secret); a gateway process
connects to them itself (a worker serves any number of
connections) and multiplexes its requests over its own connection per worker. A version scaled to
zero is woken by asking the control process through the database, then waited for like a cold
start in the platform's own gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from agentwharf.errors import DeploymentFailed, Unavailable
from agentwharf.serving.protocol import ProtocolError
from agentwharf.serving.published import StateMirror
from agentwharf.serving.worker_client import WorkerConnection

log = logging.getLogger("agentwharf.worker_directory")

#: States in which a version will answer soon: a request waits for them (up to the cold-start timeout).
_COMING = ("SCALED_TO_ZERO", "BUILDING", "STARTING", "RESTARTING")


class WorkerDirectory:
    def __init__(self, mirror: StateMirror, cold_start_timeout: float, connect_timeout: float = 2.0):
        self.mirror = mirror
        self.cold_start_timeout = cold_start_timeout
        self.connect_timeout = connect_timeout
        #: socket path -> this gateway's connection to that worker (opening or open).
        self._connections: dict[str, asyncio.Task] = {}

    async def acquire(self, key: str) -> WorkerConnection:
        """The least busy answering worker of ``key``, waiting for one that is starting.

        Raises:
            DeploymentFailed: the version's model failed to load.
            Unavailable: it is not served, or no worker answered within the cold-start timeout.
        """
        deadline = time.monotonic() + self.cold_start_timeout
        while True:
            version = self.mirror.versions.get(key)
            if version is None:
                raise Unavailable(f"{key} is not being served")
            self.mirror.note_use(key, wake=version.state == "SCALED_TO_ZERO")
            connections = [c for c in await asyncio.gather(*(self._connection(*w) for w in version.workers)) if c is not None]
            if connections:
                return min(connections, key=lambda c: c.in_flight)
            if version.state == "FAILED":
                raise DeploymentFailed(version.error or f"{key} failed to start")
            remaining = deadline - time.monotonic()
            if version.state not in _COMING and not version.addresses or remaining <= 0:
                raise Unavailable(f"No worker of {key} answers now (it is {version.state}); retry shortly")
            await self.mirror.wait_changed(min(remaining, 0.5))

    async def _connection(self, address: str, secret: str) -> WorkerConnection | None:
        task = self._connections.get(address)
        if task is not None and task.done() and (task.cancelled() or task.exception() is not None or task.result().closed):
            task = None
        if task is None:
            task = self._connections[address] = asyncio.ensure_future(
                WorkerConnection.open(address, secret=secret, timeout=self.connect_timeout))
        try:
            return await asyncio.shield(task)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ProtocolError) as error:
            # Gone since it was published (a restart, a stop): the control process publishes
            # the change within a moment, and until then the other workers answer.
            log.debug("worker socket %s: %s", address, error)
            return None

    def forget_gone(self) -> None:
        """Close connections to workers no longer published (a stopped or replaced version)."""
        live = {address for version in self.mirror.versions.values() for address in version.addresses}
        for address in list(self._connections.keys() - live):
            task = self._connections.pop(address)
            if task.done() and not task.cancelled() and task.exception() is None:
                asyncio.ensure_future(task.result().close())

    async def close(self) -> None:
        for task in self._connections.values():
            task.cancel()
            with contextlib.suppress(BaseException):
                connection = await task
                await connection.close()
        self._connections.clear()
