"""agentwharf.serving.worker_logs: the current run of a worker's log, and its build (load) part."""

from agentwharf.serving import worker_logs

START = worker_logs.START_MARKER


def run(model: str, *lines: str) -> bytes:
    return b"\n" + START + f"{model} at 2026-01-01 00:00:00 ---\n".encode() + "".join(line + "\n" for line in lines).encode()


def write(tmp_path, endpoint, entity, index, data: bytes):
    folder = tmp_path / "workers" / endpoint
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{entity}-{index}.log").write_bytes(data)
    return folder / f"{entity}-{index}.log"


READY = "2026-01-01 00:00:02,000 INFO agentwharf.worker: ready on /run/w.sock"


def test_paths_by_replica(tmp_path):
    write(tmp_path, "chat", "m_1", 0, b"a")
    write(tmp_path, "chat", "m_1", 1, b"b")
    write(tmp_path, "chat", "m_10", 0, b"c")
    assert [p.name for p in worker_logs.log_paths(tmp_path, "chat", "m_1")] == ["m_1-0.log", "m_1-1.log"]
    assert worker_logs.log_paths(tmp_path, "chat", "nothing") == []


def test_the_current_run_only(tmp_path):
    path = write(tmp_path, "chat", "m_1", 0, run("models:/m/1", "old crash") + run("models:/m/1", "loading", READY, "served"))
    text = worker_logs.server_log(path)
    assert "old crash" not in text and text.lstrip().startswith(START.decode())
    assert "loading" in text and "served" in text


def test_build_log_ends_at_ready(tmp_path):
    path = write(tmp_path, "chat", "m_1", 0, run("models:/m/1", "loading", "downloading artifacts", READY, "request 1"))
    text = worker_logs.build_log(path)
    assert "downloading artifacts" in text and text.rstrip().endswith("ready on /run/w.sock")
    assert "request 1" not in text


def test_build_log_of_a_failed_load_is_the_whole_run(tmp_path):
    path = write(tmp_path, "chat", "m_1", 0, run("models:/m/1", "loading", "Traceback: boom"))
    assert "Traceback: boom" in worker_logs.build_log(path)


def test_a_log_without_marker_and_a_long_log(tmp_path):
    plain = write(tmp_path, "chat", "a", 0, b"just text\n")
    assert worker_logs.server_log(plain) == "just text\n"
    # The marker lies more than one read chunk before the end: still found.
    long = write(tmp_path, "chat", "b", 0, run("models:/m/1", "x" * (3 * 1024 * 1024)) + run("models:/m/2", "second", READY))
    assert "models:/m/2" in worker_logs.build_log(long) and "models:/m/1" not in worker_logs.build_log(long)
    big = write(tmp_path, "chat", "c", 0, run("models:/m/1", "y" * (3 * 1024 * 1024), "tail line"))
    text = worker_logs.server_log(big, limit=1000)
    assert len(text) <= 1000 and text.rstrip().endswith("tail line")


def test_join_names_replicas_when_several():
    assert worker_logs.join([(0, "only")]) == "only"
    assert worker_logs.join([(0, "a"), (1, "b")]) == "=== worker process 0 ===\na\n=== worker process 1 ===\nb\n"
