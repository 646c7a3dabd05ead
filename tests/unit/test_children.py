"""Children's logs: appended to across starts, set aside once too big (``children.open_log``)."""

from __future__ import annotations

from agentwharf.children import log_tail, open_log


def test_a_log_is_appended_to_across_starts_and_its_folder_made(tmp_path):
    path = tmp_path / "logs" / "workers" / "bot" / "bot_1-0.log"
    for run in ("first", "second"):
        with open_log(path, max_bytes=100) as out:
            out.write(f"{run} run\n".encode())
    assert path.read_text() == "first run\nsecond run\n"
    assert not path.with_name("bot_1-0.log.1").exists()


def test_a_log_past_the_limit_is_set_aside_at_the_next_start_keeping_one(tmp_path):
    path = tmp_path / "mlflow.log"
    path.write_bytes(b"oldest\n" * 20)
    with open_log(path, max_bytes=100) as out:
        out.write(b"second run\n" * 20)
    assert path.read_bytes() == b"second run\n" * 20
    assert (tmp_path / "mlflow.log.1").read_bytes() == b"oldest\n" * 20
    with open_log(path, max_bytes=100) as out:
        out.write(b"third run\n")
    # One old copy only: the oldest run is gone, the one before the current is kept.
    assert path.read_text() == "third run\n"
    assert (tmp_path / "mlflow.log.1").read_bytes() == b"second run\n" * 20
    assert log_tail(path) == "third run"
