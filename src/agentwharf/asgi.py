"""The few ASGI moves every part of the platform makes: answer JSON, answer an error of the
tree, read a body no larger than allowed, find a header.

The gateway and the platform's front door are plain ASGI (they sit on the hot path); they answer
through these so that every answer of theirs, error or not, has the same shape.
"""

from __future__ import annotations

import asyncio

from agentwharf.errors import AgentwharfError, PayloadTooLarge, RequestTimeout

JSON_HEADERS = [(b"content-type", b"application/json")]
#: A server-sent events answer's headers (no caching, no proxy buffering), and its last event.
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
SSE_DONE = b"data: [DONE]\n\n"


async def send_json(send, status: int, body: bytes, extra_headers: list | None = None) -> None:
    # With its length (not chunked) the server writes the answer in one write (``http_protocol``).
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body)), *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send, error: AgentwharfError, extra_headers: list | None = None) -> None:
    await send_json(send, error.http_status, error.error_body(), (extra_headers or []) + error.headers())


def header(scope: dict, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def declared_length(scope: dict) -> int | None:
    value = header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def read_body(scope: dict, receive, limit: int, timeout: float) -> bytes:
    """The whole request body, refused as soon as it is known to exceed ``limit`` bytes.

    Raises:
        PayloadTooLarge: the body is (or declares itself) longer than ``limit``; nothing past
            the limit is read into memory.
        RequestTimeout: the client did not finish sending within ``timeout`` seconds.
        ConnectionAbortedError: the client went away.
    """
    declared = declared_length(scope)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(_too_large(declared, limit))
    try:
        # ``asyncio.timeout``, not ``wait_for``: on Python 3.11 ``wait_for`` runs the read in a
        # task of its own, one more turn of the event loop for every request.
        async with asyncio.timeout(timeout):
            return await _read(receive, limit)
    except TimeoutError:
        raise RequestTimeout(f"The request body was not received within {timeout:.0f}s") from None


async def _read(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(_too_large(size, limit, at_least=True))
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (f"Request body of {'at least ' if at_least else ''}{size} bytes exceeds the limit of {limit} bytes "
            "(AGENTWHARF_MAX_REQUEST_BYTES)")
