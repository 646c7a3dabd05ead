"""agentwharf.serving.protocol: the gateway-to-worker frame format."""

import asyncio

import pytest

from agentwharf.serving import protocol


def read_all(data: bytes, eof: bool = True, count: int = 1):
    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        if eof:
            reader.feed_eof()
        return [await protocol.read_frame(reader) for _ in range(count)]

    return asyncio.run(run())


def test_encode_has_header_then_payload():
    frame = protocol.encode(7, protocol.RESPONSE, b"hello", status=200)
    assert len(frame) == protocol.HEADER_SIZE + 5
    assert protocol.HEADER.unpack(frame[: protocol.HEADER_SIZE]) == (5, 7, protocol.RESPONSE, 200)
    assert frame[protocol.HEADER_SIZE:] == b"hello"


def test_frames_round_trip_through_read_frame():
    data = (
        protocol.encode(1, protocol.STREAM_START, status=200)
        + protocol.encode(1, protocol.EVENT, b'{"type":"x"}')
        + protocol.encode(2, protocol.CANCEL)
        + protocol.encode(1, protocol.STREAM_END)
    )
    frames = read_all(data, count=4)
    assert frames == [
        (1, protocol.STREAM_START, 200, b""),
        (1, protocol.EVENT, 0, b'{"type":"x"}'),
        (2, protocol.CANCEL, 0, b""),
        (1, protocol.STREAM_END, 0, b""),
    ]


def test_large_stream_id_and_status_survive():
    [frame] = read_all(protocol.encode(2**32 - 1, protocol.RESPONSE, b"x", status=65535))
    assert frame == (2**32 - 1, protocol.RESPONSE, 65535, b"x")


def test_request_round_trip_keeps_meta_and_raw_body():
    meta = {"path": "/invocations", "stream": True, "note": "line\nbreak"}
    body = b'{"input": [{"role": "user", "content": "a\\nb"}]}\n\nraw trailing newlines\n'
    [(stream_id, kind, status, payload)] = read_all(protocol.encode_request(9, meta, body))
    assert (stream_id, kind, status) == (9, protocol.REQUEST, 0)
    assert protocol.decode_request(payload) == (meta, body)


def test_request_with_empty_body():
    payload = protocol.encode_request(1, {"a": 1}, b"")[protocol.HEADER_SIZE:]
    assert protocol.decode_request(payload) == ({"a": 1}, b"")


def test_oversize_length_is_a_protocol_error():
    header = protocol.HEADER.pack(protocol.MAX_FRAME + 1, 1, protocol.RESPONSE, 0)
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        read_all(header)


def test_frame_of_exactly_max_length_is_not_rejected_by_the_header_check():
    # Only the header is fed: the reader then waits for the payload, so it hits EOF, not ProtocolError.
    header = protocol.HEADER.pack(protocol.MAX_FRAME, 1, protocol.RESPONSE, 0)
    with pytest.raises(asyncio.IncompleteReadError):
        read_all(header)


def test_truncated_header_is_an_incomplete_read():
    frame = protocol.encode(1, protocol.RESPONSE, b"abc")
    with pytest.raises(asyncio.IncompleteReadError):
        read_all(frame[: protocol.HEADER_SIZE - 1])


def test_truncated_payload_is_an_incomplete_read():
    frame = protocol.encode(1, protocol.RESPONSE, b"abcdef")
    with pytest.raises(asyncio.IncompleteReadError) as info:
        read_all(frame[:-2])
    assert info.value.partial == b"abcd"


def test_closed_connection_before_any_frame_is_an_incomplete_read():
    with pytest.raises(asyncio.IncompleteReadError):
        read_all(b"")
