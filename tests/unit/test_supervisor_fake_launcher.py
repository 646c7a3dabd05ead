"""The supervisor's decisions with every OS call behind a fake ``WorkerLauncher``: no process
is started; a "worker" is a Unix socket server in this process that greets like a worker
(``HELLO``), or a process that exits before it listens (a model that fails to load). What the
supervisor does with them (start replicas, restart a crashed one, fail a deploy, scale to zero
and back, stop) is what it does with real ones (``test_supervisor_start.py``, the integration
suite)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from pathlib import Path

import orjson
import pytest

from agentwharf.errors import DeploymentFailed
from agentwharf.serving import protocol
from agentwharf.serving.supervisor import Supervisor, WorkerSpec


class FakeProcess:
    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None
        self._exited = asyncio.Event()
        self.server: asyncio.base_events.Server | None = None

    async def wait(self) -> int | None:
        await self._exited.wait()
        return self.returncode

    def exit(self, code: int) -> None:
        if self.server is not None:
            self.server.close()
        self.returncode = code
        self._exited.set()


async def _greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(protocol.encode(0, protocol.HELLO, orjson.dumps({"pid": 1, "kind": "fake"})))
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        await reader.read()  # held open until the gateway's side or the "process" goes
    writer.close()


class FakeLauncher:
    """``WorkerLauncher``'s two calls, recorded. ``loads``: whether a started worker's model loads."""

    def __init__(self):
        self.loads = True
        self.started: list[FakeProcess] = []
        self.stopped: list[FakeProcess] = []

    async def start(self, spec, replica, runtime) -> FakeProcess:
        process = FakeProcess(pid=1000 + len(self.started))
        self.started.append(process)
        if self.loads:
            process.server = await asyncio.start_unix_server(_greet, path=replica.socket_path)
        else:
            replica.log_path.parent.mkdir(parents=True, exist_ok=True)
            replica.log_path.write_text("ImportError: no module named 'agent_deps'\n")
            process.exit(3)
        return process

    async def stop(self, process: FakeProcess, grace: float = 10.0) -> None:
        self.stopped.append(process)
        if process.returncode is None:
            process.exit(-15)

    @property
    def running(self) -> list[FakeProcess]:
        return [p for p in self.started if p.returncode is None]


@pytest.fixture
def run_dir():
    # Unix socket paths must be short: not under pytest's long tmp_path.
    path = Path(tempfile.mkdtemp(prefix="aw-sup-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _supervisor(launcher: FakeLauncher, run_dir: Path, idle_seconds: float = 60.0) -> Supervisor:
    return Supervisor(launcher, run_dir, run_dir / "logs", start_timeout=5, backoff_min=0.05, backoff_max=0.2,
                      idle_seconds=idle_seconds, cold_start_timeout=5)


def _spec(replicas: int = 1, scale_to_zero: bool = False) -> WorkerSpec:
    return WorkerSpec(key="ep/ep_1", model_uri="models:/m/1", replicas=replicas, scale_to_zero=scale_to_zero)


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_version_is_ready_once_every_replica_answers(run_dir):
    async def run():
        launcher = FakeLauncher()
        supervisor = _supervisor(launcher, run_dir)
        supervisor.ensure(_spec(replicas=2))
        version = await supervisor.wait_ready("ep/ep_1", 5)
        assert version.state == "READY" and len(version.ready_connections()) == 2 and len(launcher.running) == 2
        connection = await supervisor.acquire("ep/ep_1")
        assert connection.hello == {"pid": 1, "kind": "fake"}
        await supervisor.close()
        assert launcher.running == [] and len(launcher.stopped) == 2

    asyncio.run(run())


def test_a_crashed_replica_is_restarted_and_the_version_stays_up(run_dir):
    async def run():
        launcher = FakeLauncher()
        supervisor = _supervisor(launcher, run_dir)
        supervisor.ensure(_spec())
        version = await supervisor.wait_ready("ep/ep_1", 5)
        launcher.started[0].exit(139)  # a segfault
        await _until(lambda: version.replicas[0].restarts == 1 and version.state == "READY" and len(launcher.running) == 1)
        assert len(launcher.started) == 2 and version.ready_connections()
        await supervisor.close()

    asyncio.run(run())


def test_a_model_that_never_loads_fails_the_deploy_with_its_log(run_dir):
    async def run():
        launcher = FakeLauncher()
        launcher.loads = False
        supervisor = _supervisor(launcher, run_dir)
        supervisor.ensure(_spec())
        with pytest.raises(DeploymentFailed) as failed:
            await supervisor.wait_ready("ep/ep_1", 5)
        assert "no module named 'agent_deps'" in failed.value.message
        # Not retried: a model that did not load will not load the next time.
        assert len(launcher.started) == 1 and supervisor.versions["ep/ep_1"].state == "FAILED"
        with pytest.raises(DeploymentFailed):
            await supervisor.acquire("ep/ep_1")
        await supervisor.close()

    asyncio.run(run())


def test_an_idle_version_scales_to_zero_and_a_call_wakes_it(run_dir):
    async def run():
        launcher = FakeLauncher()
        supervisor = _supervisor(launcher, run_dir, idle_seconds=0.5)
        supervisor.start_background()
        supervisor.ensure(_spec(scale_to_zero=True))
        version = await supervisor.wait_ready("ep/ep_1", 5)
        await _until(lambda: version.state == "SCALED_TO_ZERO")
        assert launcher.running == []
        connection = await supervisor.acquire("ep/ep_1")  # the cold start
        assert not connection.closed and version.state == "READY" and len(launcher.started) == 2
        await supervisor.close()

    asyncio.run(run())


def test_a_changed_spec_replaces_the_replicas_and_stop_forgets_the_version(run_dir):
    async def run():
        launcher = FakeLauncher()
        supervisor = _supervisor(launcher, run_dir)
        supervisor.ensure(_spec())
        first = await supervisor.wait_ready("ep/ep_1", 5)
        assert supervisor.ensure(_spec()) is first  # the same spec: nothing to do
        supervisor.ensure(_spec(replicas=2))
        second = await supervisor.wait_ready("ep/ep_1", 5)
        assert second is not first and len(second.ready_connections()) == 2
        # The old version's cleanup ran beside the new one's start and left its sockets alone.
        await _until(lambda: len(launcher.running) == 2)
        assert all(Path(r.socket_path).exists() for r in second.replicas)
        await supervisor.stop("ep/ep_1")
        assert "ep/ep_1" not in supervisor.versions and launcher.running == []

    asyncio.run(run())
