"""The supervisor's decisions with every OS call behind a fake ``WorkerLauncher``: no process
is started; a "worker" is a Unix socket server in this process that greets like a worker
(``HELLO``), or a process that exits before it listens (a model that fails to load). What the
supervisor does with them (start replicas, restart a crashed one, fail a deploy, scale to zero
and back, stop) is what it does with real ones (``test_supervisor_start.py``, the integration
suite)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentwharf.errors import DeploymentFailed
from agentwharf.serving import transport
from agentwharf.serving.supervisor import Supervisor, WorkerSpec
from agentwharf.serving.transport import TcpAddress
from tests.unit.fake_launcher import FakeLauncher, until


def _supervisor(launcher: FakeLauncher, run_dir: Path, idle_seconds: float = 60.0, worker_transport: str = "unix") -> Supervisor:
    return Supervisor(launcher, run_dir, run_dir / "logs", start_timeout=5, backoff_min=0.05, backoff_max=0.2,
                      idle_seconds=idle_seconds, cold_start_timeout=5, worker_transport=worker_transport)


def _spec(replicas: int = 1, scale_to_zero: bool = False) -> WorkerSpec:
    return WorkerSpec(key="ep/ep_1", model_uri="models:/m/1", replicas=replicas, scale_to_zero=scale_to_zero)


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
        await until(lambda: version.replicas[0].restarts == 1 and version.state == "READY" and len(launcher.running) == 1)
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
        # The state changes first, then the workers are stopped (``_stop_version``).
        await until(lambda: version.state == "SCALED_TO_ZERO" and not launcher.running)
        connection = await supervisor.acquire("ep/ep_1")  # the cold start
        assert not connection.closed and version.state == "READY" and len(launcher.started) == 2
        await supervisor.close()

    asyncio.run(run())


def test_a_wake_while_a_scale_to_zero_still_stops_keeps_the_new_workers(run_dir):
    async def run():
        launcher = FakeLauncher()
        launcher.stop_seconds = 0.3  # the old worker takes a while to finish
        supervisor = _supervisor(launcher, run_dir, idle_seconds=0.3)
        supervisor.start_background()
        supervisor.ensure(_spec(scale_to_zero=True))
        version = await supervisor.wait_ready("ep/ep_1", 5)
        old = list(version.replicas)
        await until(lambda: version.state == "SCALED_TO_ZERO")
        supervisor.note_demand("ep/ep_1", 0.0, wake=True)  # a gateway process's request, mid-stop
        connection = await supervisor.acquire("ep/ep_1")
        for _ in range(10):  # the old replicas' stop finishes meanwhile; gateways report use
            supervisor.note_demand("ep/ep_1", 0.0, wake=False)
            await asyncio.sleep(0.05)
        assert not connection.closed and version.state == "READY"
        assert all(r not in old for r in version.replicas)
        assert all(Path(r.ready_path).exists() for r in version.replicas)
        assert len(launcher.running) == 1
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
        await until(lambda: len(launcher.running) == 2)
        assert all(Path(r.ready_path).exists() for r in second.replicas)
        await supervisor.stop("ep/ep_1")
        assert "ep/ep_1" not in supervisor.versions and launcher.running == []

    asyncio.run(run())


def test_tcp_workers_are_reached_at_the_port_they_report_each_with_its_own_secret(run_dir):
    async def run():
        launcher = FakeLauncher()
        supervisor = _supervisor(launcher, run_dir, worker_transport="tcp")
        supervisor.ensure(_spec(replicas=2))
        version = await supervisor.wait_ready("ep/ep_1", 5)
        first, second = version.replicas
        assert first.listen == "tcp://127.0.0.1:0" and first.ready_path.endswith(".addr")
        assert isinstance(first.address, TcpAddress) and first.address.host == "127.0.0.1" and first.address.port > 0
        assert first.address != second.address
        assert len(first.secret) == 64 and first.secret != second.secret and first.secret not in repr(first)
        assert not list(run_dir.glob("*.sock"))
        # A crashed worker comes back on the port its new ready file names, and is reached there.
        launcher.started[0].exit(139)
        await until(lambda: first.restarts == 1 and version.state == "READY" and len(version.ready_connections()) == 2)
        assert first.address == transport.read_ready_file(first.ready_path)
        await supervisor.close()
        assert not list(run_dir.glob("w-*"))

    asyncio.run(run())
