"""uvicorn's HTTP protocol with the limits it lacks: a deadline and a size cap for a request's
headers, and a cap on open connections, each refused with agentwharf's JSON error (as is a
request that is not HTTP at all, which uvicorn answers in plain text).

Without a header deadline a client that opens a socket and sends a byte now and then holds it
forever, before any token is checked (slowloris); uvicorn's keep-alive timeout starts only
after a response. Its own ``limit_concurrency`` answers in plain text and counts idle
keep-alive sockets; the platform counts requests in progress itself (``Platform._http``).

It also writes an answer of known length (``content-length``) in one write where uvicorn makes
two (status line and headers at ``http.response.start``, then the body): one send syscall and
one TCP segment fewer, and the client reads the whole answer at one wake-up. On loopback a send
runs the receiver's side of TCP too; profiled under the ``llm-overhead`` benchmark, uvicorn's
two writes were ~19% of the gateway's GIL time on an LLM call (issue 12, item 7).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from agentwharf.errors import AgentwharfError, BadRequest, HeadersTooLarge, RequestTimeout, Unavailable

#: Request line and headers together may not exceed this (nginx's default buffers hold 32 KiB).
MAX_HEADER_BYTES = 64 * 1024


def _raw_answer(error: AgentwharfError) -> bytes:
    body = error.error_body()
    head = [f"HTTP/1.1 {error.http_status} {_REASONS[error.http_status]}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    head += [f"{key.decode()}: {value.decode()}" for key, value in error.headers()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _AnswerTransport:
    """The transport as one request's cycle sees it: the head of an answer of known length is
    held back (``hold_next``) and written with the body's first bytes."""

    __slots__ = ("_transport", "_held", "hold_next")

    def __init__(self, transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self.hold_next = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif self.hold_next:
            self.hold_next, self._held = False, data
            return
        self._transport.write(data)

    def flush(self) -> None:
        """Write what is held (an answer whose body message wrote nothing: a HEAD request's)."""
        self.hold_next = False
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


def _has_length(headers) -> bool:
    for name, _ in headers:
        if name.lower() == b"content-length":
            return True
    return False


def _one_write_answers(cycle: RequestResponseCycle) -> None:
    """Have ``cycle`` write the head of an answer of known length with its body."""
    transport = cycle.transport = _AnswerTransport(cycle.transport)
    send = cycle.send

    async def one_write_send(message) -> None:
        if message["type"] == "http.response.start":
            transport.hold_next = _has_length(message.get("headers", ()))
            try:
                await send(message)
            except BaseException:
                transport.flush()
                raise
            return
        try:
            await send(message)
        finally:
            transport.flush()

    # uvicorn's task reads ``cycle.send`` when it calls the app, after this (the task is
    # created in ``on_headers_complete`` and first runs at the loop's next turn).
    cycle.send = one_write_send  # type: ignore[method-assign]


_REASONS = {400: "Bad Request", 408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def protocol_class(header_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these limits."""

    class GuardedHttpProtocol(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None
        #: Bytes received since the current request began, while its headers are incomplete.
        _header_bytes = 0
        #: The current request's request line and headers, as parsed.
        _exact_header_bytes = 0

        def data_received(self, data: bytes) -> None:
            if self._header_deadline is None:
                super().data_received(data)
                return
            self._header_bytes += len(data)
            if self._header_bytes <= MAX_HEADER_BYTES:
                super().data_received(data)
                return
            # Past the limit with the headers incomplete so far. One read may hold the headers
            # *and* the start of a large body (a busy server reads what a client sent in one
            # go): parse it, and refuse if the headers are still not complete. Complete headers
            # are measured exactly (on_url, on_header), so a body never counts as headers.
            super().data_received(data)
            if self._header_deadline is not None:
                self._refuse(HeadersTooLarge(f"The request line and headers exceed {MAX_HEADER_BYTES} bytes"))

        def on_url(self, url: bytes) -> None:
            self._exact_header_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._exact_header_bytes += len(name) + len(value) + 4  # ": " and CRLF
            super().on_header(name, value)

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self._refuse(Unavailable(f"The platform has {max_connections} open connections, its limit "
                                         "(AGENTWHARF_MAX_CONNECTIONS); retry shortly"))
                return
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            if self._exact_header_bytes > MAX_HEADER_BYTES:
                # Refused before the request is dispatched; the exception stops the parser
                # (uvicorn's own 400 then finds the connection already closing).
                self._refuse(HeadersTooLarge(f"The request line and headers exceed {MAX_HEADER_BYTES} bytes"))
                raise ConnectionAbortedError("headers too large")
            before = self.cycle
            super().on_headers_complete()
            if self.cycle is not before:
                _one_write_answers(self.cycle)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            # Bytes that are not HTTP: uvicorn's answer is plain text, agentwharf's is JSON.
            self._refuse(BadRequest(f"Not a valid HTTP request: {msg}"))

        def _arm(self) -> None:
            self._disarm()
            self._header_bytes = 0
            self._exact_header_bytes = 0
            self._header_deadline = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            self._refuse(RequestTimeout(f"The request headers did not arrive within {header_timeout:.0f}s"))

        def _refuse(self, error: AgentwharfError) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(_raw_answer(error))
                self.transport.close()

    return GuardedHttpProtocol
