"""The gateway's end of one worker connection (see ``protocol`` for the frames, ``transport``
for the Unix socket or TCP they travel on)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson

from agentwharf.errors import Unavailable
from agentwharf.serving import protocol, transport

log = logging.getLogger("agentwharf.gateway")

#: Pseudo frame kind queued to every open call when the worker connection drops.
CONNECTION_LOST = 255


class WorkerGone(Exception):
    """The worker process closed its connection (it crashed, was stopped, or was restarted)."""


@dataclass(slots=True)
class Reply:
    """A worker's answer: a whole body, or (``stream`` true) events to pull with ``events()``."""

    status: int
    body: bytes
    stream: bool
    _call: _Call | None = None

    @property
    def stream_id(self) -> int:
        return self._call.stream_id if self._call is not None else 0

    @property
    def record(self) -> bytes | None:
        """The worker's trace record, once the answer (or the stream) is complete."""
        return self._call.record if self._call is not None else None

    async def events(self) -> AsyncIterator[tuple[bytes, bytes | None]]:
        """Yield ``(event_json, None)`` per event, then ``(b"", error_json_or_None)`` once at the end."""
        async for events, ended, error in self.event_batches():
            for event in events:
                yield event, None
            if ended:
                yield b"", error


    async def event_batches(self, most: int = 64) -> AsyncIterator[tuple[list[bytes], bool, bytes | None]]:
        """``events()`` in groups: ``(events, ended, error_json_or_None)``. A group holds the
        next event and every event already queued behind it (never waiting for more), so a
        stream relayed slower than its worker sends (a busy gateway) catches up with one write
        to its client instead of one per event; an idle one still sends each event at once."""
        assert self._call is not None
        queue = self._call.queue
        while True:
            frames = [await queue.get()]
            while len(frames) < most and not queue.empty():
                frames.append(queue.get_nowait())
            events = []
            for kind, _status, payload in frames:
                if kind == protocol.EVENT:
                    events.append(payload)
                    continue
                error = (payload or None) if kind == protocol.STREAM_END else \
                    Unavailable("The model worker stopped while streaming.").error_body()
                yield events, True, error
                return
            yield events, False, None


class _Call:
    __slots__ = ("queue", "stream_id", "record")

    def __init__(self, stream_id: int):
        self.stream_id = stream_id
        self.record: bytes | None = None
        self.queue: asyncio.Queue[tuple[int, int, bytes]] = asyncio.Queue()


async def first_answer(call: _Call, timeout: float, cancel, gone: str) -> Reply:
    """The first frame answering ``call``: a whole answer, or the start of a stream whose events
    follow on the call's queue. Any worker connection's ``request`` ends with this.

    Raises:
        WorkerGone: the connection was lost before an answer (``gone`` says how).
        asyncio.TimeoutError: no answer within ``timeout``; the call is cancelled and forgotten.
    """
    try:
        kind, status, payload = await asyncio.wait_for(call.queue.get(), timeout)
    except asyncio.TimeoutError:
        cancel(call.stream_id, forget=True)
        raise
    if kind == CONNECTION_LOST:
        raise WorkerGone(gone)
    if kind == protocol.STREAM_START:
        return Reply(status, b"", True, call)
    return Reply(status, payload, False, call)


class WorkerConnection:
    """Many concurrent requests multiplexed over one connection (Unix socket or TCP) to one
    worker process."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hello: dict):
        self._reader = reader
        self._writer = writer
        self.hello = hello
        self.in_flight = 0
        self.closed = False
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count(1)
        self._closed = asyncio.Event()
        self._pump = asyncio.create_task(self._read_loop(), name=f"worker-conn-{hello.get('pid')}")

    @classmethod
    async def open(cls, address: str | transport.Address, secret: str = "", timeout: float = 5.0) -> WorkerConnection:
        """Connect to the worker at ``address`` (``unix:/path`` or ``tcp://host:port``) and read
        its HELLO; on TCP, after proving ``secret`` (see ``transport``).

        Raises:
            OSError, asyncio.TimeoutError, asyncio.IncompleteReadError: not listening (yet), too
                slow, or it closed the connection (on TCP: it refused the secret).
            protocol.ProtocolError: not a worker's greeting, or a TCP worker without the secret.
        """
        if isinstance(address, str):
            address = transport.parse_address(address)
        reader, writer = await transport.connect(address, secret, timeout)
        _sid, kind, _status, payload = await asyncio.wait_for(protocol.read_frame(reader), timeout)
        if kind != protocol.HELLO:
            writer.close()
            raise protocol.ProtocolError(f"expected HELLO from worker, got frame kind {kind}")
        return cls(reader, writer, orjson.loads(payload))

    async def _read_loop(self) -> None:
        try:
            while True:
                stream_id, kind, status, payload = await protocol.read_frame(self._reader)
                call = self._calls.get(stream_id)
                if call is None:
                    continue  # an answer for a request already given up (timed out)
                if kind == protocol.RECORD:
                    call.record = payload
                    continue
                if kind in (protocol.RESPONSE, protocol.STREAM_END):
                    del self._calls[stream_id]
                call.queue.put_nowait((kind, status, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except protocol.ProtocolError as error:
            log.error("worker %s sent a bad frame (%s); closing the connection", self.hello.get("pid"), error)
        finally:
            self.closed = True
            for call in self._calls.values():
                call.queue.put_nowait((CONNECTION_LOST, 0, b""))
            self._calls.clear()
            self._writer.close()
            self._closed.set()

    async def wait_closed(self) -> None:
        """Return once the connection is closed (by either side)."""
        await self._closed.wait()

    async def request(self, meta: dict, body: bytes, timeout: float) -> Reply:
        """Send one request and wait for its first answer frame.

        Raises:
            WorkerGone: the connection is closed or closes before the worker answers.
            asyncio.TimeoutError: no answer within ``timeout`` (the request is cancelled).
        """
        if self.closed:
            raise WorkerGone("worker connection is closed")
        call = _Call(next(self._ids))
        self._calls[call.stream_id] = call
        self._writer.write(protocol.encode_request(call.stream_id, meta, body))
        return await first_answer(call, timeout, self.cancel, "worker stopped before answering")

    def cancel(self, stream_id: int, forget: bool = False) -> None:
        """Tell the worker the client is gone, so it stops producing for this stream. The
        stream stays open (unless ``forget``) so its final record still arrives."""
        if forget:
            self._calls.pop(stream_id, None)
        if not self.closed:
            self._writer.write(protocol.encode(stream_id, protocol.CANCEL))

    async def close(self) -> None:
        self._writer.close()
        self._pump.cancel()
