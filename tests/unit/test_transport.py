"""agentwharf.serving.transport: worker addresses, and the TCP handshake that keeps a worker's
port closed to anyone without its secret (in-process servers on loopback, no worker process)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import orjson
import pytest

from agentwharf.errors import InvalidConfiguration
from agentwharf.serving import protocol, transport
from agentwharf.serving.transport import TcpAddress, UnixAddress
from agentwharf.serving.worker_client import WorkerConnection, WorkerGone

SECRET = "s3cret-for-tests"


# -- addresses -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "address"), [
    ("unix:/tmp/run/w-1.sock", UnixAddress("/tmp/run/w-1.sock")),
    ("tcp://127.0.0.1:0", TcpAddress("127.0.0.1", 0)),
    ("tcp://worker-3.internal:41234", TcpAddress("worker-3.internal", 41234)),
    ("tcp://[::1]:9000", TcpAddress("::1", 9000)),
])
def test_addresses_parse_and_print_back(text, address):
    assert transport.parse_address(text) == address
    assert str(address) == text


@pytest.mark.parametrize("text", ["/tmp/w.sock", "unix:", "tcp://127.0.0.1", "tcp://:80", "tcp://host:http",
                                  "tcp://host:70000", "http://host:80", ""])
def test_an_address_without_its_transport_or_with_a_bad_port_is_refused(text):
    with pytest.raises(InvalidConfiguration):
        transport.parse_address(text)


def test_the_ready_file_names_the_address_bound(tmp_path):
    ready = str(tmp_path / "w.addr")
    transport.write_ready_file(ready, TcpAddress("127.0.0.1", 40001))
    assert transport.read_ready_file(ready) == TcpAddress("127.0.0.1", 40001)
    assert [p.name for p in tmp_path.iterdir()] == ["w.addr"]  # no partial file left


# -- a worker on TCP -------------------------------------------------------------------------


async def _echo_worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A worker's greeting, then each REQUEST's body answered as a RESPONSE."""
    writer.write(protocol.encode(0, protocol.HELLO, orjson.dumps({"pid": 7, "kind": "echo"})))
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            stream_id, kind, _status, payload = await protocol.read_frame(reader)
            if kind == protocol.REQUEST:
                _meta, body = protocol.decode_request(payload)
                writer.write(protocol.encode(stream_id, protocol.RESPONSE, body, 200))
    writer.close()


@contextlib.asynccontextmanager
async def tcp_worker(secret: str = SECRET):
    server, bound = await transport.listen(TcpAddress("127.0.0.1", 0), _echo_worker, secret)
    async with server:
        yield server, bound


async def _ask(connection: WorkerConnection, text: bytes) -> bytes:
    reply = await connection.request({"route": "invocations"}, text, timeout=5)
    return reply.body


def test_a_tcp_worker_takes_a_free_port_on_loopback_and_answers_the_same_frames():
    async def run():
        async with tcp_worker() as (_server, bound):
            assert bound.host == "127.0.0.1" and bound.port > 0
            connection = await WorkerConnection.open(str(bound), SECRET)
            assert connection.hello == {"pid": 7, "kind": "echo"}
            answers = await asyncio.gather(*(_ask(connection, b"x%d" % i) for i in range(20)))
            assert answers == [b"x%d" % i for i in range(20)]
            sock = connection._writer.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            await connection.close()

    asyncio.run(run())


def test_a_tcp_worker_never_listens_without_a_secret():
    async def run():
        with pytest.raises(InvalidConfiguration):
            await transport.listen(TcpAddress("127.0.0.1", 0), _echo_worker, "")

    asyncio.run(run())


def test_a_wrong_secret_is_refused_and_the_worker_keeps_serving():
    async def run():
        async with tcp_worker() as (_server, bound):
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                await WorkerConnection.open(bound, "not-the-secret")
            connection = await WorkerConnection.open(bound, SECRET)
            assert await _ask(connection, b"still here") == b"still here"
            await connection.close()

    asyncio.run(run())


def test_a_client_that_says_nothing_is_disconnected_without_a_greeting(monkeypatch):
    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT", 0.2)

    async def run():
        async with tcp_worker() as (_server, bound):
            reader, writer = await asyncio.open_connection(bound.host, bound.port)
            _sid, kind, _status, nonce = await protocol.read_frame(reader)
            assert kind == protocol.CHALLENGE and len(nonce) == transport.NONCE_SIZE
            # Nothing about the worker (its HELLO) before a proof; closed once the time is up.
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()
            connection = await WorkerConnection.open(bound, SECRET)
            assert await _ask(connection, b"next") == b"next"
            await connection.close()

    asyncio.run(run())


def test_a_request_sent_without_the_handshake_is_never_answered():
    async def run():
        async with tcp_worker() as (_server, bound):
            reader, writer = await asyncio.open_connection(bound.host, bound.port)
            writer.write(protocol.encode_request(1, {"route": "invocations"}, b"let me in"))
            _sid, kind, _status, _nonce = await protocol.read_frame(reader)
            assert kind == protocol.CHALLENGE
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()

    asyncio.run(run())


def test_a_huge_frame_before_the_handshake_is_refused_without_being_read():
    async def run():
        async with tcp_worker() as (_server, bound):
            reader, writer = await asyncio.open_connection(bound.host, bound.port)
            writer.write(protocol.HEADER.pack(protocol.MAX_FRAME, 0, protocol.AUTH, 0))
            await protocol.read_frame(reader)  # the challenge
            assert await asyncio.wait_for(reader.read(), 2) == b""
            writer.close()

    asyncio.run(run())


def test_the_gateway_refuses_a_listener_that_cannot_prove_the_secret():
    """A process that took the port of a dead worker must not get the gateway's requests."""
    async def run():
        server, bound = await transport.listen(TcpAddress("127.0.0.1", 0), _echo_worker, "another-secret")
        async with server:
            with pytest.raises((asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError)):
                await WorkerConnection.open(bound, SECRET)

        async def impostor(reader, writer):
            writer.write(protocol.encode(0, protocol.CHALLENGE, b"n" * transport.NONCE_SIZE))
            await protocol.read_frame(reader)
            writer.write(protocol.encode(0, protocol.AUTH, b"p" * transport.PROOF_SIZE))
            await reader.read()

        fake = await asyncio.start_server(impostor, "127.0.0.1", 0)
        async with fake:
            port = fake.sockets[0].getsockname()[1]
            with pytest.raises(protocol.ProtocolError):
                await WorkerConnection.open(TcpAddress("127.0.0.1", port), SECRET)

    asyncio.run(run())


def test_a_lost_tcp_connection_is_worker_gone_like_a_unix_one():
    async def run():
        async def never_answers(reader, writer):
            writer.write(protocol.encode(0, protocol.HELLO, b"{}"))
            await protocol.read_frame(reader)  # the request, then the "crash"
            writer.transport.abort()

        silent, bound = await transport.listen(TcpAddress("127.0.0.1", 0), never_answers, SECRET)
        async with silent:
            connection = await WorkerConnection.open(bound, SECRET)
            with pytest.raises(WorkerGone):
                await connection.request({}, b"x", timeout=5)
            await asyncio.wait_for(connection.wait_closed(), 5)
            assert connection.closed
            with pytest.raises(WorkerGone):
                await connection.request({}, b"y", timeout=5)

    asyncio.run(run())


def test_a_unix_address_connects_as_before_without_a_handshake(tmp_path):
    async def run():
        path = str(tmp_path / "w.sock")
        server, bound = await transport.listen(UnixAddress(path), _echo_worker, "")
        async with server:
            assert bound == UnixAddress(path)
            connection = await WorkerConnection.open(f"unix:{path}")
            assert await _ask(connection, b"unix") == b"unix"
            await connection.close()

    asyncio.run(run())
