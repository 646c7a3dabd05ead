"""Workers reached over TCP (``AGENTWHARF_WORKER_TRANSPORT=tcp``): on a platform of the test's own,
a deployed version's worker listens on 127.0.0.1 (a free port, no Unix socket), answers plain and
streamed calls with the same frames, each with its trace and inference row, and closes a
connection that cannot prove the worker's secret while it keeps serving."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from pathlib import Path

import httpx
import mlflow
import pytest

from agentwharf import agents
from agentwharf.serving import protocol, transport
from agentwharf.settings import PlatformSettings
from tests.integration.conftest import (
    PLATFORM_ENV,
    ask,
    own_platform_with_info_agent,
    rows_for,
    sse_events,
)
from tests.integration.platform_process import wait_until


@pytest.fixture(scope="module")
def on_tcp(tmp_path_factory):
    """A platform whose workers listen on TCP, the info agent deployed on it: (platform, http,
    the invocations path, the deployment)."""
    env = {**PLATFORM_ENV, "AGENTWHARF_WORKER_TRANSPORT": "tcp"}
    with own_platform_with_info_agent(tmp_path_factory.mktemp("tcp") / "home", "/tests/tcp", env) as (platform, uri):
        model = f"main.tcp.info{uuid.uuid4().hex[:6]}"
        mlflow.register_model(uri, model)
        deployment = agents.deploy(model, "1")
        with httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=60) as http:
            yield platform, http, f"/serving-endpoints/{deployment.endpoint_name}/invocations", deployment


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    return inodes


def _listening(pid: int) -> tuple[list[tuple[str, int]], list[str]]:
    """The TCP (IPv4) addresses and the Unix socket paths the process listens on (/proc)."""
    inodes = _socket_inodes(pid)
    tcp = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
            host, port = fields[1].split(":")
            tcp.append((socket.inet_ntoa(bytes.fromhex(host)[::-1]), int(port, 16)))
    unix = []
    for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[6] in inodes and int(fields[3], 16) & 0x10000:  # __SO_ACCEPTCON: listening
            unix.append(fields[7] if len(fields) > 7 else "")
    return tcp, unix


def _worker_pid(http: httpx.Client, path: str) -> int:
    answer = ask(http, path, "who")
    assert answer.status_code == 200, answer.text
    return answer.json()["custom_outputs"]["pid"]


def test_a_tcp_worker_answers_plain_and_streamed_calls_each_recorded(on_tcp):
    _platform, http, path, deployment = on_tcp
    answer = ask(http, path, "hello over tcp")
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"][0]["content"][0]["text"] == "Echo: hello over tcp"
    streamed = http.post(path, json={"input": [{"role": "user", "content": "again"}], "stream": True,
                                     "custom_inputs": {"events": 3}})
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed)
    assert events[-1] == "[DONE]" and sum("part" in e for e in events) == 3
    ids = {answer.headers["x-request-id"], streamed.headers["x-request-id"]}
    rows = rows_for(http, deployment.endpoint_name, ids)
    assert {row["status_code"] for row in rows.values()} == {200}
    for row in rows.values():
        trace = wait_until(lambda r=row: mlflow.get_trace(r["trace_id"]), timeout=30, message="the trace")
        assert trace.info.request_metadata.get("agentwharf.served_entity") == deployment.served_entity_name


def test_the_worker_listens_on_loopback_tcp_and_on_no_unix_socket(on_tcp):
    platform, http, path, _deployment = on_tcp
    pid = _worker_pid(http, path)
    tcp, unix = _listening(pid)
    assert len(tcp) == 1 and tcp[0][0] == "127.0.0.1" and tcp[0][1] > 0, tcp
    assert unix == []
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[command.index(b"--listen") + 1] == b"tcp://127.0.0.1:0"
    run_dir = PlatformSettings(home=platform.home).run_dir
    # Its ready file, and the folder it fetched its model into unless its environment's build
    # fetched them for it (whether this session built that environment already); no socket.
    suffixes = sorted(f.suffix for f in run_dir.glob("w-*"))
    assert not list(run_dir.glob("*.sock")) and suffixes in ([".addr"], [".addr", ".model"]), suffixes
    ready = transport.read_ready_file(str(next(run_dir.glob("w-*.addr"))))
    assert ready == transport.TcpAddress(*tcp[0])


def test_a_connection_without_the_secret_is_closed_and_the_worker_keeps_serving(on_tcp):
    _platform, http, path, _deployment = on_tcp
    pid = _worker_pid(http, path)
    [(host, port)], _unix = _listening(pid)
    with socket.create_connection((host, port), timeout=15) as intruder:
        # A made-up proof; the worker answers nothing about itself and hangs up.
        intruder.sendall(protocol.encode(0, protocol.AUTH, b"\0" * (transport.NONCE_SIZE + transport.PROOF_SIZE)))
        received = b""
        while chunk := intruder.recv(4096):
            received += chunk
    length, _sid, kind, _status = protocol.HEADER.unpack(received[:protocol.HEADER_SIZE])
    assert kind == protocol.CHALLENGE and len(received) == protocol.HEADER_SIZE + length == protocol.HEADER_SIZE + 32
    assert _worker_pid(http, path) == pid  # the same worker, still serving
