"""A fake ``WorkerLauncher`` for unit tests of the supervisor and the reconciler: no process is
started; a "worker" is a Unix socket server (or, for a TCP replica, a loopback TCP server behind
the real handshake, its port in its ready file) in the test's own event loop that greets like a
worker (``HELLO``), or a process that exits before it listens, with a load error in its log (a
model that fails to load: ``refuse`` names such model URIs)."""

from __future__ import annotations

import asyncio
import contextlib

import orjson

from agentwharf.serving import protocol, transport


class FakeProcess:
    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    async def wait(self) -> int | None:
        await self._exited.wait()
        return self.returncode

    def exit(self, code: int) -> None:
        if self.server is not None:
            self.server.close()
        self.returncode = code
        self._exited.set()


async def _greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(protocol.encode(0, protocol.HELLO, orjson.dumps({"pid": 1, "kind": "fake"})))
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await reader.read()  # held open until the gateway's side or the "process" goes
    writer.close()


async def _listen(replica) -> asyncio.base_events.Server:
    """Listen where the supervisor told the replica to, as a worker does (``worker._serve``)."""
    address = transport.parse_address(replica.listen or f"unix:{replica.ready_path}")
    server, bound = await transport.listen(address, _greet, replica.secret)
    if isinstance(address, transport.TcpAddress):
        transport.write_ready_file(replica.ready_path, bound)
    return server


class FakeLauncher:
    """``WorkerLauncher``'s two calls, recorded. ``loads``: whether started workers' models load;
    ``refuse``: model URIs that never load whatever ``loads`` says."""

    def __init__(self):
        self.loads = True
        self.refuse: set[str] = set()
        self.started: list[FakeProcess] = []
        self.stopped: list[FakeProcess] = []
        #: Seconds a stop takes (a worker finishing its requests within its grace period).
        self.stop_seconds = 0.0

    async def start(self, spec, replica, runtime) -> FakeProcess:
        process = FakeProcess(pid=1000 + len(self.started))
        self.started.append(process)
        if self.loads and spec.model_uri not in self.refuse:
            process.server = await _listen(replica)
        else:
            replica.log_path.parent.mkdir(parents=True, exist_ok=True)
            replica.log_path.write_text("ImportError: no module named 'agent_deps'\n")
            process.exit(3)
        return process

    async def stop(self, process: FakeProcess, grace: float = 10.0) -> None:
        self.stopped.append(process)
        await asyncio.sleep(self.stop_seconds)
        if process.returncode is None:
            process.exit(-15)

    async def close(self) -> None:
        self.closed = True

    @property
    def running(self) -> list[FakeProcess]:
        return [p for p in self.started if p.returncode is None]


async def until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
