"""The spare pool's choice between a warm spare and a fresh worker, without processes."""

from __future__ import annotations

import asyncio

from agentwharf.serving.spares import Spare, SparePool, can_take_over
from tests.unit.fake_launcher import FakeProcess, until

PLATFORM = ("/usr/bin/python3", None)
MODEL_ENV = ("/envs/abc/bin/python", "/runtime")


class Spawner:
    """Records spawned spares; they are ready at once unless ``ready`` is False."""

    def __init__(self):
        self.spawned: list[tuple[tuple, Spare]] = []
        self.stopped: list[FakeProcess] = []
        self.ready = True

    async def spawn(self, key) -> Spare:
        spare = Spare(FakeProcess(pid=2000 + len(self.spawned)), ready=self.ready)
        self.spawned.append((key, spare))
        return spare

    async def stop(self, process: FakeProcess) -> None:
        self.stopped.append(process)
        process.exit(-15)


def pool(spawner: Spawner, per_runtime: int = 1) -> SparePool:
    return SparePool(per_runtime, spawner.spawn, spawner.stop, refill_delay=0)


def test_no_spare_for_a_runtime_never_used():
    async def scenario():
        spawner = Spawner()
        spares = pool(spawner)
        await asyncio.sleep(0.05)
        assert spawner.spawned == []
        await spares.close()

    asyncio.run(scenario())


def start(spares: SparePool, key, after=None) -> Spare | None:
    """What ``WorkerLauncher.start`` does: take a spare if one is ready, then refill."""
    taken = spares.take(key)
    spares.refill(key, after)
    return taken


def test_first_start_is_fresh_and_leaves_a_spare_the_second_takes():
    async def scenario():
        spawner = Spawner()
        spares = pool(spawner)
        assert start(spares, PLATFORM) is None  # fresh worker; a spare starts for next time
        await until(lambda: len(spawner.spawned) == 1)
        first = spawner.spawned[0][1]
        assert spawner.spawned[0][0] == PLATFORM
        assert start(spares, PLATFORM) is first
        await until(lambda: len(spawner.spawned) == 2)  # replaced in the background
        assert start(spares, MODEL_ENV) is None  # another runtime has its own spares
        await until(lambda: len(spawner.spawned) == 3)
        assert spawner.spawned[2][0] == MODEL_ENV
        await spares.close()
        assert {p.pid for p in spawner.stopped} == {2001, 2002}  # never the one handed out

    asyncio.run(scenario())


def test_a_spare_still_importing_or_dead_is_not_taken():
    async def scenario():
        spawner = Spawner()
        spawner.ready = False
        spares = pool(spawner)
        start(spares, PLATFORM)
        await until(lambda: len(spawner.spawned) == 1)
        importing = spawner.spawned[0][1]
        assert start(spares, PLATFORM) is None
        await asyncio.sleep(0.05)
        assert len(spawner.spawned) == 1  # at most one per runtime
        importing.ready = True
        importing.process.exit(1)  # died after all
        assert start(spares, PLATFORM) is None
        await until(lambda: len(spawner.spawned) == 2)  # the dead one is replaced
        spawner.spawned[1][1].ready = True
        assert start(spares, PLATFORM) is spawner.spawned[1][1]
        await spares.close()

    asyncio.run(scenario())


def test_zero_spares_turns_them_off():
    async def scenario():
        spawner = Spawner()
        spares = pool(spawner, per_runtime=0)
        assert start(spares, PLATFORM) is None
        await asyncio.sleep(0.05)
        assert spawner.spawned == []
        await spares.close()

    asyncio.run(scenario())


def test_the_refill_waits_for_the_worker_just_started():
    async def scenario():
        spawner = Spawner()
        spares = pool(spawner)
        listening = asyncio.Event()
        start(spares, PLATFORM, after=listening.wait)  # a fresh worker loading its model
        await asyncio.sleep(0.1)
        assert spawner.spawned == []  # its imports would slow the load down
        listening.set()
        await until(lambda: len(spawner.spawned) == 1)
        spares.refill(PLATFORM)  # a version no spare can run (PYTHON* variables) still uses the runtime
        await asyncio.sleep(0.05)
        assert len(spawner.spawned) == 1
        await spares.close()

    asyncio.run(scenario())


def test_variables_read_at_interpreter_start_need_a_fresh_worker():
    assert can_take_over((("OPENAI_API_KEY", "x"), ("MLFLOW_EXPERIMENT_ID", "3")))
    assert can_take_over({})
    assert not can_take_over((("PYTHONPATH", "/x"),))
    assert not can_take_over({"LD_PRELOAD": "/x.so"})
    assert not can_take_over({"OMP_NUM_THREADS": "1"})
