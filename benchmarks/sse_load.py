"""A small SSE load generator: ``connections`` clients, each posting one streaming request after
another on its own keep-alive connection, timing each stream's first ``data:`` event.

Plain asyncio sockets (uvloop when installed), not an HTTP library: a thousand streams of 21
events each every half second is ~40,000 events a second, and the client must not be what is
measured. After the first event a stream's bytes are only scanned for the end of the chunked
body, not parsed.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

_END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked body


def _request(url: str, body: dict, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Content-Type: application/json",
             "Accept: text/event-stream", f"Content-Length: {len(payload)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _one_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> float:
    """Send one request; the seconds to its first event. Reads the stream to its end."""
    started = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200 or b"chunked" not in head.lower():
        raise RuntimeError(f"answered {status}: {head[:200]!r}")
    seen = b""
    while b"data:" not in seen:
        seen += await reader.read(65536)
    first = time.perf_counter() - started
    tail = seen[-len(_END):]
    while not tail.endswith(_END):
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("the connection closed mid-stream")
        tail = (tail + chunk)[-len(_END):]
    return first


async def _client(url: str, request: bytes, deadline: float, measure_from: float, firsts: list[float],
                  errors: list[str]) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, limit=1 << 20)
    try:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                first = await _one_stream(reader, writer, request)
            except (RuntimeError, ConnectionError, asyncio.IncompleteReadError) as error:
                errors.append(str(error)[:200])
                return
            if sent >= measure_from:
                firsts.append(first)
    finally:
        writer.close()


async def _run(url: str, body: dict, headers: dict[str, str], connections: int, duration: float, warmup: float) -> dict:
    request = _request(url, body, headers)
    start = time.perf_counter()
    firsts: list[float] = []
    errors: list[str] = []
    await asyncio.gather(*(_client(url, request, start + warmup + duration, start + warmup, firsts, errors)
                           for _ in range(connections)))
    return {"streams": len(firsts), "first_event_s": sorted(firsts), "errors": errors,
            "streams_per_s": len(firsts) / duration}


def run(url: str, body: dict, headers: dict[str, str], connections: int, duration: float, warmup: float = 3.0) -> dict:
    """Stream for ``warmup + duration`` seconds; streams started after the warm-up are counted."""
    try:
        import uvloop

        return uvloop.run(_run(url, body, headers, connections, duration, warmup))
    except ImportError:
        return asyncio.run(_run(url, body, headers, connections, duration, warmup))
