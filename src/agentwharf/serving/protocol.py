"""The gateway-to-worker wire format: length-prefixed frames over a Unix socket or TCP.

Why not loopback HTTP: on the hot path an HTTP hop costs a request parse and a response parse on
both sides (httpx alone spends a few hundred microseconds per call), more than the EchoAgent
itself. A Unix socket skips TCP, and fixed binary headers parse with one ``struct.unpack``. One
connection per worker carries many requests at once, each tagged with a stream id, so the gateway
never waits for a free connection and a slow stream never blocks a fast request.

Frame layout (network byte order)::

    length: u32 | stream_id: u32 | kind: u8 | status: u16 | payload (length bytes)

Gateway to worker: ``REQUEST`` (payload: one JSON line of metadata, ``\\n``, the raw request body)
and ``CANCEL`` (the client went away). Worker to gateway: ``HELLO`` once after the model loaded,
``RESPONSE`` for a whole JSON answer, or ``STREAM_START``, any number of ``EVENT`` (one JSON
stream event each) and ``STREAM_END`` (empty, or a JSON error if the stream failed midway).
Right before ``RESPONSE`` or ``STREAM_END`` comes ``RECORD``: the request's trace and payloads
for the durable spool (see ``agentwharf.tracing``). On TCP, ``CHALLENGE`` and ``AUTH`` come first:
the handshake that proves both ends share the worker's secret (see ``transport``).
"""

from __future__ import annotations

import asyncio
import struct

import orjson

HEADER = struct.Struct("!IIBH")
HEADER_SIZE = HEADER.size
MAX_FRAME = 256 * 1024 * 1024

REQUEST = 1
CANCEL = 2
HELLO = 3
RESPONSE = 4
STREAM_START = 5
EVENT = 6
STREAM_END = 7
RECORD = 8
CHALLENGE = 9
AUTH = 10


def encode(stream_id: int, kind: int, payload: bytes = b"", status: int = 0) -> bytes:
    return HEADER.pack(len(payload), stream_id, kind, status) + payload


def encode_request(stream_id: int, meta: dict, body: bytes) -> bytes:
    return encode(stream_id, REQUEST, orjson.dumps(meta) + b"\n" + body)


def decode_request(payload: bytes) -> tuple[dict, bytes]:
    meta, _, body = payload.partition(b"\n")
    return orjson.loads(meta), body


class ProtocolError(Exception):
    """The peer sent something that is not a frame; the connection cannot be trusted."""


async def read_frame(reader: asyncio.StreamReader, max_length: int = MAX_FRAME) -> tuple[int, int, int, bytes]:
    """Read one frame: ``(stream_id, kind, status, payload)``.

    Args:
        reader: the connection.
        max_length: the longest payload accepted (a handshake's frames are short: a peer not
            yet trusted must not make this side buffer up to ``MAX_FRAME``).

    Raises:
        asyncio.IncompleteReadError: the peer closed the connection.
        ProtocolError: the header announced an impossible length.
    """
    header = await reader.readexactly(HEADER_SIZE)
    length, stream_id, kind, status = HEADER.unpack(header)
    if length > max_length:
        raise ProtocolError(f"frame of {length} bytes exceeds the {max_length} limit")
    payload = await reader.readexactly(length) if length else b""
    return stream_id, kind, status, payload
