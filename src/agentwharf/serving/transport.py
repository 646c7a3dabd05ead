"""Where a worker listens and how the gateway reaches it: a Unix socket or TCP, the same frames.

Addresses are explicit about their transport:

    unix:/home/me/.agentwharf/run/w-0123abcd4567-0-9f3e.sock
    tcp://127.0.0.1:41234            tcp://[::1]:41234

A worker told to listen on port 0 takes any free port and writes the address it bound to its
*ready file* (written whole, then renamed into place, so a reader never sees half of it): the
supervisor polls for that file as it polls for a Unix socket to appear, and a file that exists
means a model that answers.

Why a handshake on TCP only: a Unix socket in the platform's run folder is reachable by its own
user alone (0600 in a 0700 folder); a TCP port by anything that can reach the host. So a TCP
worker requires a per-worker secret before it says anything about itself, and proves it knows
the same secret, so the gateway never sends a request (and the caller's token in it) to a
process that took the port after the worker died. Neither side sends the secret itself, only
HMAC-SHA256 proofs over both sides' fresh nonces, so a proof seen on the wire cannot be
replayed::

    worker  -> CHALLENGE  worker_nonce (32 random bytes)
    gateway -> AUTH       gateway_nonce (32) | HMAC(secret, "gateway" | worker_nonce | gateway_nonce)
    worker  -> AUTH       HMAC(secret, "worker" | worker_nonce | gateway_nonce)
    worker  -> HELLO      ... then frames as on a Unix socket

A connection that does not present a valid proof within ``HANDSHAKE_TIMEOUT`` is closed without
an answer, and the worker keeps serving its other connections. The frames themselves are not
encrypted: across machines, keep worker ports on a private network (README, "Running on more
than one machine").
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentwharf.errors import InvalidConfiguration
from agentwharf.serving import protocol

log = logging.getLogger("agentwharf.transport")

#: Seconds a TCP client has to prove it knows the worker's secret before it is disconnected.
HANDSHAKE_TIMEOUT = 5.0
NONCE_SIZE = 32
PROOF_SIZE = hashlib.sha256().digest_size

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class UnixAddress:
    path: str

    def __str__(self) -> str:
        return f"unix:{self.path}"


@dataclass(frozen=True)
class TcpAddress:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


Address = UnixAddress | TcpAddress


def parse_address(text: str) -> Address:
    """``unix:/path`` or ``tcp://host:port`` (an IPv6 host in brackets).

    Raises:
        InvalidConfiguration: neither form, an empty path or host, or a port outside 0-65535.
    """
    if text.startswith("unix:"):
        path = text[len("unix:"):]
        if not path:
            raise InvalidConfiguration(f"Worker address {text!r} names no socket path")
        return UnixAddress(path)
    if text.startswith("tcp://"):
        return _parse_tcp(text)
    raise InvalidConfiguration(f"Worker address {text!r} is neither unix:/path nor tcp://host:port")


def _parse_tcp(text: str) -> TcpAddress:
    host, colon, port = text[len("tcp://"):].rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidConfiguration(f"Worker address {text!r} is not tcp://host:port (port 0-65535)")
    return TcpAddress(host, int(port))


# -- the worker's side ---------------------------------------------------------------------


async def listen(address: Address, handler: Handler, secret: str) -> tuple[asyncio.AbstractServer, Address]:
    """Listen on ``address``; the server and the address it bound (TCP port 0: the port taken).

    Raises:
        InvalidConfiguration: TCP without a secret (a TCP worker never answers unauthenticated).
    """
    if isinstance(address, UnixAddress):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)
        return await asyncio.start_unix_server(handler, path=address.path), address
    if not secret:
        raise InvalidConfiguration("A worker listening on TCP needs a secret (the supervisor passes one on stdin)")
    server = await asyncio.start_server(authenticated(handler, secret), address.host, address.port)
    return server, _bound(server)


def _bound(server: asyncio.AbstractServer) -> TcpAddress:
    """The first socket's address, one the supervisor can dial: a wildcard bind is reached on
    loopback (the supervisor runs on the worker's machine)."""
    host, port = server.sockets[0].getsockname()[:2]
    return TcpAddress({"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host), port)


def write_ready_file(path: str, address: Address) -> None:
    """Say where the worker listens, all at once: the supervisor reads the file as soon as it exists."""
    partial = f"{path}.partial"
    with open(partial, "w") as ready:
        ready.write(str(address))
    os.replace(partial, path)


def read_ready_file(path: str) -> Address:
    """The address a worker wrote with ``write_ready_file``."""
    with open(path) as ready:
        return parse_address(ready.read().strip())


def authenticated(handler: Handler, secret: str) -> Handler:
    """``handler`` behind the handshake: a connection without a valid proof in time is closed."""
    key = secret.encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        try:
            await asyncio.wait_for(_challenge(reader, writer, key), HANDSHAKE_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError) as refused:
            log.warning("closed a connection from %s without a valid worker secret (%s)",
                        writer.get_extra_info("peername"), type(refused).__name__)
            writer.close()
            return
        await handler(reader, writer)

    return handle


async def _challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
    worker_nonce = secrets.token_bytes(NONCE_SIZE)
    writer.write(protocol.encode(0, protocol.CHALLENGE, worker_nonce))
    _sid, kind, _status, payload = await protocol.read_frame(reader, max_length=NONCE_SIZE + PROOF_SIZE)
    gateway_nonce, proof = payload[:NONCE_SIZE], payload[NONCE_SIZE:]
    if kind != protocol.AUTH or len(gateway_nonce) != NONCE_SIZE:
        raise protocol.ProtocolError("expected AUTH")
    if not hmac.compare_digest(proof, _proof(key, b"gateway", worker_nonce, gateway_nonce)):
        raise protocol.ProtocolError("wrong proof")
    writer.write(protocol.encode(0, protocol.AUTH, _proof(key, b"worker", worker_nonce, gateway_nonce)))


def _proof(key: bytes, side: bytes, worker_nonce: bytes, gateway_nonce: bytes) -> bytes:
    return hmac.new(key, side + worker_nonce + gateway_nonce, hashlib.sha256).digest()


# -- the gateway's side --------------------------------------------------------------------


async def connect(address: Address, secret: str, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to a worker, past the handshake on TCP: its next frame is the worker's HELLO.

    Raises:
        OSError: nothing listens there. asyncio.TimeoutError: no answer in time.
        asyncio.IncompleteReadError: the worker closed the connection (it refused the proof).
        protocol.ProtocolError: the worker did not prove it knows the secret.
    """
    if isinstance(address, UnixAddress):
        return await asyncio.wait_for(asyncio.open_unix_connection(address.path, limit=protocol.MAX_FRAME), timeout)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(address.host, address.port, limit=protocol.MAX_FRAME), timeout)
    _no_delay(writer)
    try:
        await asyncio.wait_for(_answer_challenge(reader, writer, secret.encode()), timeout)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _answer_challenge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: bytes) -> None:
    _sid, kind, _status, worker_nonce = await protocol.read_frame(reader, max_length=NONCE_SIZE)
    if kind != protocol.CHALLENGE or len(worker_nonce) != NONCE_SIZE:
        raise protocol.ProtocolError(f"expected CHALLENGE from a TCP worker, got frame kind {kind}")
    gateway_nonce = secrets.token_bytes(NONCE_SIZE)
    writer.write(protocol.encode(0, protocol.AUTH, gateway_nonce + _proof(key, b"gateway", worker_nonce, gateway_nonce)))
    _sid, kind, _status, proof = await protocol.read_frame(reader, max_length=PROOF_SIZE)
    if kind != protocol.AUTH or not hmac.compare_digest(proof, _proof(key, b"worker", worker_nonce, gateway_nonce)):
        raise protocol.ProtocolError("the TCP worker did not prove it knows its secret")


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Frames go out as written: Nagle's algorithm would hold a small answer frame back for the
    peer's delayed ACK (up to 40 ms on Linux). asyncio sets this already; uvloop may not."""
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
