"""Frames leave a worker once per turn of its event loop, and a gateway relays the events it
already holds in one write: fewer system calls under load, nothing held back when idle."""

import asyncio
import json

from agentwharf.serving import protocol
from agentwharf.serving.frame_writer import CoalescingWriter
from agentwharf.serving.worker_client import Reply, _Call


class SocketWrites:
    """What reaches the socket: the bytes of each ``write`` of asyncio's StreamWriter."""

    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def test_frames_written_in_one_turn_leave_in_one_write_in_order_and_the_next_turns_in_another():
    async def run():
        socket = SocketWrites()
        writer = CoalescingWriter(socket)
        for n in range(3):
            writer.write(protocol.encode(n, protocol.EVENT, b"%d" % n))
        assert socket.writes == []  # not yet: the turn is not over
        await asyncio.sleep(0)
        writer.write(protocol.encode(9, protocol.EVENT, b"9"))
        await asyncio.sleep(0)
        return socket.writes

    writes = asyncio.run(run())
    assert writes == [b"".join(protocol.encode(n, protocol.EVENT, b"%d" % n) for n in range(3)),
                      protocol.encode(9, protocol.EVENT, b"9")]


def test_closing_sends_what_is_pending_first_and_nothing_is_written_to_a_closed_connection():
    async def run():
        socket = SocketWrites()
        writer = CoalescingWriter(socket)
        writer.write(b"last words")
        writer.close()
        writer.write(b"too late")
        await asyncio.sleep(0)
        return socket

    socket = asyncio.run(run())
    assert socket.writes == [b"last words"] and socket.closed


def _reply(frames) -> Reply:
    call = _Call(1)
    for frame in frames:
        call.queue.put_nowait(frame)
    return Reply(status=200, body=b"", stream=True, _call=call)


def _groups(reply: Reply):
    async def run():
        return [group async for group in reply.event_batches()]

    return asyncio.run(run())


def test_events_already_queued_are_relayed_together_and_the_end_comes_with_them():
    events = [(protocol.EVENT, 200, json.dumps({"n": n}).encode()) for n in range(5)]
    groups = _groups(_reply([*events, (protocol.STREAM_END, 200, b"")]))
    assert groups == [([payload for _, _, payload in events], True, None)]


def test_a_stream_that_failed_or_lost_its_worker_ends_with_the_error():
    failed = _groups(_reply([(protocol.EVENT, 200, b"{}"), (protocol.STREAM_END, 200, b'{"error_code": "X"}')]))
    assert failed == [([b"{}"], True, b'{"error_code": "X"}')]
    lost = _groups(_reply([(protocol.EVENT, 200, b"{}"), (protocol.RESPONSE, 503, b"")]))
    assert lost[0][0] == [b"{}"] and lost[0][1] and json.loads(lost[0][2])["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_an_event_is_relayed_as_soon_as_it_comes_when_nothing_else_is_queued():
    async def run():
        reply = _reply([(protocol.EVENT, 200, b"first")])
        batches = reply.event_batches()
        first = await asyncio.wait_for(batches.__anext__(), 1)
        reply._call.queue.put_nowait((protocol.STREAM_END, 200, b""))
        rest = [group async for group in batches]
        return first, rest

    first, rest = asyncio.run(run())
    assert first == ([b"first"], False, None) and rest == [([], True, None)]
