"""One replica of a served version in Ray Serve (``AGENTWHARF_RUNTIME=ray``): the same
``WorkerServer`` a worker process runs, its frames carried by Ray's deployment handle instead of
a Unix socket.

Each call on the handle carries one ``REQUEST`` frame and streams back the frames the worker
writes for it, its ``RECORD`` included, through the last (``RESPONSE`` or ``STREAM_END``): the
gateway reads them exactly as it reads a worker connection (``ray_runtime.RayConnection``), so
tracing, the inference table and streaming work unchanged.

This module runs inside Ray's replica processes (imported by the ``AgentReplica`` deployment
class), in the cluster's Python, which must have agentwharf installed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator

import orjson

from agentwharf.serving import protocol

#: Frames after which the worker has nothing more to say about a request.
_LAST = (protocol.RESPONSE, protocol.STREAM_END)


class FrameQueue:
    """Stands in for the socket writer ``WorkerServer`` writes to: each frame written is queued
    for the handle call that asked for it."""

    def __init__(self):
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()

    def write(self, data: bytes) -> None:
        # The worker writes whole frames, sometimes two at once (RECORD then RESPONSE).
        view, at = memoryview(data), 0
        while at < len(view):
            length = protocol.HEADER.unpack_from(view, at)[0]
            end = at + protocol.HEADER_SIZE + length
            self.frames.put_nowait(bytes(view[at:end]))
            at = end

    def close(self) -> None:
        pass


def frame_kind(frame: bytes) -> int:
    return protocol.HEADER.unpack_from(frame)[2]


class AgentReplica:
    """The body of the Ray Serve deployment (``ray_runtime`` wraps it with ``serve.deployment``):
    loads the model once, then answers frames."""

    def __init__(self, model_uri: str, load_token: str, threads: int, max_field_chars: int):
        from agentwharf.serving.worker import WorkerServer, _load

        adapter = _load(model_uri, load_token)
        self.server = WorkerServer(adapter, threads, max_field_chars)
        self._hello = orjson.dumps({"pid": os.getpid(), "kind": adapter.kind, "runtime": "ray"})
        # Each call is its own pseudo connection to the server: its CANCEL flag is its own.
        self._calls = itertools.count(1)

    def hello(self) -> bytes:
        """What a worker says when it starts: its pid and the model's interface."""
        return self._hello

    async def frames(self, request: bytes) -> AsyncIterator[bytes]:
        """The frames answering one ``REQUEST`` frame, through the last. A caller that stops
        reading (the client went away) cancels the request, as ``CANCEL`` does on a socket."""
        _length, stream_id, kind, _status = protocol.HEADER.unpack_from(request)
        payload = request[protocol.HEADER_SIZE:]
        if kind != protocol.REQUEST:
            raise ValueError(f"expected a REQUEST frame, got kind {kind}")
        call, out, finished = next(self._calls), FrameQueue(), False
        task = asyncio.create_task(self.server.handle_request(call, stream_id, payload, out))
        try:
            while not finished:
                frame = await out.frames.get()
                finished = frame_kind(frame) in _LAST
                yield frame
        finally:
            if not finished and (flag := self.server.cancelled.get((call, stream_id))) is not None:
                flag.set()
            if task.done():
                task.result()
