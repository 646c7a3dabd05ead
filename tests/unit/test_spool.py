"""agentwharf.tracing.spool: the fsync'd segment files between the gateway and the writer."""

import asyncio
import errno
import os
import zlib

import pytest

from agentwharf.tracing import spool
from agentwharf.tracing.spool import RECORD_HEADER, SpoolAppender, SpoolReader, encode_record, list_segments, segment_name


def payload(i: int, size: int = 0) -> tuple[bytes, bytes]:
    return b'{"request_id":"req-%d"}' % i, b'{"n":%d,"pad":"%s"}' % (i, b"x" * size)


def append_all(appender: SpoolAppender, items, concurrently: bool = False) -> None:
    async def run():
        if concurrently:
            await asyncio.gather(*(appender.append(encode_record(h, r)) for h, r in items))
        else:
            for h, r in items:
                await appender.append(encode_record(h, r))

    asyncio.run(run())


def spooled(folder, items, segment_bytes: int = 64 * 1024 * 1024) -> SpoolAppender:
    appender = SpoolAppender(folder, segment_bytes=segment_bytes)
    appender.open()
    append_all(appender, items)
    appender.close()
    return appender


def read_all(folder, segment=0, offset=0, limit=10_000):
    return list(SpoolReader(folder).read(segment, offset, limit))


def seg_path(folder, seq):
    return folder / segment_name(seq)


def test_encode_record_is_length_crc_then_header_newline_record():
    data = encode_record(b'{"a":1}', b'{"b":2}')
    length, crc = RECORD_HEADER.unpack(data[:8])
    assert data[8:] == b'{"a":1}\n{"b":2}'
    assert length == len(data) - 8
    assert crc == zlib.crc32(b'{"a":1}\n{"b":2}')


def test_segment_names_sort_and_foreign_files_are_ignored(tmp_path):
    for name in (segment_name(10), segment_name(2), "progress.json", "seg-1.log", segment_name(3) + ".tmp"):
        (tmp_path / name).write_bytes(b"")
    assert segment_name(7) == "seg-000000000007.log"
    assert list_segments(tmp_path) == [2, 10]
    assert list_segments(tmp_path / "missing") == []


def test_records_come_back_in_order_with_their_bytes_and_end_offsets(tmp_path):
    items = [payload(i, size=i * 3) for i in range(5)]
    appender = spooled(tmp_path, items)
    records = read_all(tmp_path)
    assert [(r.header, r.record) for r in records] == items
    assert {r.segment for r in records} == {1}
    expected_ends, end = [], 0
    for h, r in items:
        end += len(encode_record(h, r))
        expected_ends.append(end)
    assert [r.end_offset for r in records] == expected_ends
    assert seg_path(tmp_path, 1).stat().st_size == end
    assert appender.appended_records == 5 and appender.appended_bytes == end


def test_record_payload_may_contain_newlines(tmp_path):
    spooled(tmp_path, [(b'{"h":1}', b'{"text":"a\nb"}\n')])
    [record] = read_all(tmp_path)
    assert record.header == b'{"h":1}'
    assert record.record == b'{"text":"a\nb"}\n'


def test_reading_from_a_checkpoint_resumes_right_after_it(tmp_path):
    items = [payload(i) for i in range(6)]
    spooled(tmp_path, items)
    first = read_all(tmp_path, limit=2)
    assert [r.record for r in first] == [r for _, r in items[:2]]
    rest = read_all(tmp_path, first[-1].segment, first[-1].end_offset)
    assert [r.record for r in rest] == [r for _, r in items[2:]]
    last = rest[-1]
    assert read_all(tmp_path, last.segment, last.end_offset) == []


def test_limit_caps_records_across_segments(tmp_path):
    spooled(tmp_path, [payload(i) for i in range(6)], segment_bytes=1)
    assert [r.segment for r in read_all(tmp_path, limit=4)] == [1, 2, 3, 4]


def test_small_segments_rotate_and_are_read_in_order(tmp_path):
    items = [payload(i, size=40) for i in range(10)]
    record_size = len(encode_record(*items[0]))
    spooled(tmp_path, items, segment_bytes=2 * record_size)
    segments = list_segments(tmp_path)
    assert len(segments) >= 5
    records = read_all(tmp_path)
    assert [r.record for r in records] == [r for _, r in items]
    # Each record says which file it is in, and no segment grows much past the limit.
    assert [r.segment for r in records] == sorted(r.segment for r in records)
    assert len({r.segment for r in records}) == 5
    for seq in segments:
        assert seg_path(tmp_path, seq).stat().st_size <= 2 * record_size


def test_resuming_at_the_end_of_a_full_segment_moves_to_the_next(tmp_path):
    spooled(tmp_path, [payload(i) for i in range(3)], segment_bytes=1)
    [first] = read_all(tmp_path, limit=1)
    assert first.segment == 1 and first.end_offset == seg_path(tmp_path, 1).stat().st_size
    assert [r.segment for r in read_all(tmp_path, first.segment, first.end_offset)] == [2, 3]


def test_reopened_appender_starts_a_new_segment_and_never_touches_the_old(tmp_path):
    spooled(tmp_path, [payload(1), payload(2)])
    old = seg_path(tmp_path, 1).read_bytes()
    second = spooled(tmp_path, [payload(3)])
    assert list_segments(tmp_path) == [1, 2]
    assert seg_path(tmp_path, 1).read_bytes() == old
    assert second.appended_records == 1
    records = read_all(tmp_path)
    assert [(r.segment, r.header) for r in records] == [(1, payload(1)[0]), (1, payload(2)[0]), (2, payload(3)[0])]


def test_truncated_tail_of_an_old_segment_is_skipped_and_reading_goes_on(tmp_path):
    spooled(tmp_path, [payload(1), payload(2)])
    path = seg_path(tmp_path, 1)
    path.write_bytes(path.read_bytes()[:-5])  # crashed while writing record 2: never acknowledged
    spooled(tmp_path, [payload(3)])  # the restarted gateway writes segment 2
    reader = SpoolReader(tmp_path)
    records = list(reader.read(0, 0, 100))
    assert [r.header for r in records] == [payload(1)[0], payload(3)[0]]
    assert reader.skipped_tails == 1


def test_truncated_header_of_an_old_segment_is_skipped_too(tmp_path):
    spooled(tmp_path, [payload(1), payload(2)])
    path = seg_path(tmp_path, 1)
    one = len(encode_record(*payload(1)))
    path.write_bytes(path.read_bytes()[: one + 3])  # only 3 bytes of record 2's length/crc
    spooled(tmp_path, [payload(3)])
    reader = SpoolReader(tmp_path)
    assert [r.header for r in reader.read(0, 0, 100)] == [payload(1)[0], payload(3)[0]]
    assert reader.skipped_tails == 1


def test_truncated_tail_of_the_last_segment_waits_as_a_write_in_progress(tmp_path):
    spooled(tmp_path, [payload(1), payload(2)])
    path = seg_path(tmp_path, 1)
    full = path.read_bytes()
    path.write_bytes(full[:-5])
    reader = SpoolReader(tmp_path)
    records = list(reader.read(0, 0, 100))
    assert [r.header for r in records] == [payload(1)[0]]
    assert reader.skipped_tails == 0
    # The write completes: the record is read from the same checkpoint.
    path.write_bytes(full)
    later = list(reader.read(records[-1].segment, records[-1].end_offset, 100))
    assert [r.header for r in later] == [payload(2)[0]]


def test_crc_mismatch_stops_reading_that_segment(tmp_path):
    spooled(tmp_path, [payload(1), payload(2), payload(3)])
    spooled(tmp_path, [payload(4)])
    path = seg_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    one = len(encode_record(*payload(1)))
    data[one + RECORD_HEADER.size + 2] ^= 0xFF  # a byte inside record 2's payload
    path.write_bytes(bytes(data))
    reader = SpoolReader(tmp_path)
    records = list(reader.read(0, 0, 100))
    assert [r.header for r in records] == [payload(1)[0], payload(4)[0]]
    assert reader.skipped_tails == 1


def test_crc_mismatch_in_the_last_segment_yields_nothing_after_it(tmp_path):
    spooled(tmp_path, [payload(1), payload(2)])
    path = seg_path(tmp_path, 1)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    assert [r.header for r in read_all(tmp_path)] == [payload(1)[0]]


def test_missing_checkpoint_segment_starts_from_the_next_one(tmp_path):
    spooled(tmp_path, [payload(1)])
    spooled(tmp_path, [payload(2)])
    os.unlink(seg_path(tmp_path, 1))
    assert [r.header for r in read_all(tmp_path, 1, 123)] == [payload(2)[0]]
    assert read_all(tmp_path / "nowhere") == []


def test_pending_bytes_counts_file_bytes_after_the_checkpoint(tmp_path):
    items = [payload(i, size=10) for i in range(6)]
    spooled(tmp_path, items, segment_bytes=3 * len(encode_record(*items[0])))
    reader = SpoolReader(tmp_path)
    sizes = {seq: seg_path(tmp_path, seq).stat().st_size for seq in list_segments(tmp_path)}
    total = sum(sizes.values())
    assert reader.pending_bytes(0, 0) == total
    records = read_all(tmp_path)
    for record in records:
        after = sum(size for seq, size in sizes.items() if seq > record.segment) + sizes[record.segment] - record.end_offset
        assert reader.pending_bytes(record.segment, record.end_offset) == after
    assert reader.pending_bytes(records[-1].segment, records[-1].end_offset) == 0
    assert reader.pending_bytes(99, 0) == 0
    assert SpoolReader(tmp_path / "none").pending_bytes(0, 0) == 0


def test_delete_before_removes_only_older_segments(tmp_path):
    for _ in range(4):
        spooled(tmp_path, [payload(0)])
    (tmp_path / "progress.json").write_bytes(b"{}")
    reader = SpoolReader(tmp_path)
    reader.delete_before(3)
    assert list_segments(tmp_path) == [3, 4]
    assert (tmp_path / "progress.json").exists()
    reader.delete_before(3)  # nothing left to delete: harmless
    assert list_segments(tmp_path) == [3, 4]
    assert [r.segment for r in read_all(tmp_path)] == [3, 4]


def test_concurrent_appends_share_fsyncs_and_all_are_readable(tmp_path):
    appender = SpoolAppender(tmp_path)
    appender.open()
    items = [payload(i) for i in range(50)]
    append_all(appender, items, concurrently=True)
    appender.close()
    assert appender.appended_records == 50
    assert 1 <= appender.fsyncs < 50
    records = read_all(tmp_path)
    assert sorted(r.header for r in records) == sorted(h for h, _ in items)
    assert len(records) == 50


def test_append_returns_only_after_the_record_is_in_the_file(tmp_path):
    appender = SpoolAppender(tmp_path)
    appender.open()

    async def run():
        await appender.append(encode_record(*payload(1)))
        # Acknowledged: readable by another reader right now, without closing the appender.
        return [r.header for r in read_all(tmp_path)]

    assert asyncio.run(run()) == [payload(1)[0]]
    assert appender.fsyncs == 1
    appender.close()


def test_failed_write_reports_the_error_to_every_waiting_append(tmp_path, monkeypatch):
    appender = SpoolAppender(tmp_path)
    appender.open()

    def broken_sync(fd):
        raise OSError(errno.EIO, "disk gone")

    monkeypatch.setattr(spool.os, "fdatasync", broken_sync)

    async def run():
        return await asyncio.gather(*(appender.append(encode_record(*payload(i))) for i in range(3)),
                                    return_exceptions=True)

    results = asyncio.run(run())
    appender.close()
    assert all(isinstance(r, OSError) for r in results)
    assert appender.appended_records == 0


def test_records_acknowledged_after_a_short_write_error_stay_readable(tmp_path, monkeypatch):
    """Disk full mid-record: the append fails, but later acknowledged appends must not be lost.

    A partial record left in the live segment makes every record appended after it unreadable:
    the reader sees a bad CRC where the partial record ends and stops reading the segment.
    """
    appender = SpoolAppender(tmp_path)
    appender.open()
    real_write = os.write
    state = {"failed": False}

    def short_write(fd, data):
        if fd == appender._fd and not state["failed"]:
            state["failed"] = True
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(spool.os, "write", short_write)

    async def run():
        with pytest.raises(OSError):
            await appender.append(encode_record(*payload(1)))
        await appender.append(encode_record(*payload(2)))  # space is back: acknowledged

    asyncio.run(run())
    appender.close()
    spooled(tmp_path, [payload(3)])  # and the gateway restarts later
    headers = [r.header for r in read_all(tmp_path)]
    assert payload(2)[0] in headers
    assert headers == [payload(2)[0], payload(3)[0]]


def test_a_full_disk_that_also_refuses_a_new_segment_fails_appends_until_space_is_back(tmp_path, monkeypatch):
    appender = SpoolAppender(tmp_path)
    appender.open()
    real_write, real_open = os.write, os.open
    full = {"on": True}

    def write(fd, data):
        if fd == appender._fd and full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def open_(path, flags, mode=0o777):
        if full["on"] and str(path).endswith(".log"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, mode)

    monkeypatch.setattr(spool.os, "write", write)
    monkeypatch.setattr(spool.os, "open", open_)

    async def run():
        for i in (1, 2):  # the write fails, then opening the fresh segment fails
            with pytest.raises(OSError) as raised:
                await appender.append(encode_record(*payload(i)))
            assert raised.value.errno == errno.ENOSPC
        full["on"] = False
        await appender.append(encode_record(*payload(3)))

    asyncio.run(run())
    appender.close()
    assert [r.header for r in read_all(tmp_path)] == [payload(3)[0]]



def test_a_record_that_comes_alone_is_synced_on_the_loop_and_a_slow_disk_sends_it_to_a_thread(tmp_path, monkeypatch):
    """Group commit pays only when records come together; one alone (no other request in
    progress) skips the thread hop, unless the last sync was slow (a stalled disk must not
    stall the event loop)."""
    appender = SpoolAppender(tmp_path)
    appender.open()
    threads = []
    real_to_thread = asyncio.to_thread

    async def counted(function, *args):
        threads.append(function)
        return await real_to_thread(function, *args)

    monkeypatch.setattr(spool.asyncio, "to_thread", counted)

    async def run():
        await appender.append(encode_record(*payload(1)), alone=True)
        assert threads == []  # written at once
        await appender.append(encode_record(*payload(2)))  # others in progress: a batch, in a thread
        assert len(threads) == 1
        appender._last_sync = spool.QUICK_SYNC_SECONDS  # the disk was slow last time
        await appender.append(encode_record(*payload(3)), alone=True)
        assert len(threads) == 2

    asyncio.run(run())
    appender.close()
    assert [r.header for r in read_all(tmp_path)] == [payload(i)[0] for i in (1, 2, 3)]
    assert appender.appended_records == 3
