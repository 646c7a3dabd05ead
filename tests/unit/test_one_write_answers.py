"""uvicorn's cycle with the platform's protocol: an answer of known length leaves in one write."""

import asyncio
import logging

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from agentwharf.asgi import send_json
from agentwharf.platform.http_protocol import _one_write_answers


class Transport:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle(method: str = "POST") -> tuple[RequestResponseCycle, Transport]:
    transport = Transport()
    made = RequestResponseCycle(
        scope={"type": "http", "method": method, "http_version": "1.1", "path": "/", "headers": []},
        transport=transport, flow=FlowControl(transport), logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"), access_log=False, default_headers=[],
        message_event=asyncio.Event(), expect_100_continue=False, keep_alive=True, on_response=lambda: None)
    _one_write_answers(made)
    return made, transport


def test_a_json_answer_is_one_write_with_its_length():
    made, transport = cycle()
    asyncio.run(send_json(made.send, 200, b'{"a": 1}', [(b"x-request-id", b"r1")]))
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 8" in head and b"transfer-encoding" not in head
    assert body == b'{"a": 1}' and made.response_complete


def test_a_streamed_answer_sends_its_head_at_once():
    made, transport = cycle()

    async def stream():
        await made.send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK")
        await made.send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await made.send({"type": "http.response.body", "body": b"", "more_body": False})

    asyncio.run(stream())
    assert len(transport.writes) == 3


def test_a_head_answer_with_a_length_still_gets_its_head():
    made, transport = cycle("HEAD")

    async def head():
        await made.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await made.send({"type": "http.response.body", "body": b""})

    asyncio.run(head())
    assert len(transport.writes) == 1 and b"content-length: 5" in transport.writes[0]


def test_an_answer_cut_short_still_writes_its_head_before_closing():
    made, transport = cycle()

    async def cut():
        await made.send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        assert transport.writes == []
        made.transport.close()

    asyncio.run(cut())
    assert len(transport.writes) == 1 and transport.closed
