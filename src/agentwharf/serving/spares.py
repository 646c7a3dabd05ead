"""Warm spare workers: the launcher's side (the worker's is ``spare_worker``).

Deploy-to-first-answer is mostly a new worker importing MLflow (issue 17 item 4). The pool keeps
up to ``per_runtime`` spares for each runtime (one Python, with its PYTHONPATH) that has already
started a worker in this platform's life, so an idle platform that never deployed has none
(the idle footprint targets in ``make bench``). ``take`` hands out a ready spare, if any;
``refill`` replaces it (or makes the first) in the background; the OS calls (``spawn``, ``stop``) stay in ``WorkerLauncher``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentwharf.serving.spare_worker import READY_LINE

log = logging.getLogger("agentwharf.spares")

#: (python, PYTHONPATH or None): spares are interchangeable only within one runtime.
SpareKey = tuple[str, "str | None"]

#: Longest a refill waits for the worker just started to be ready: a spare's imports would
#: otherwise take CPU from the model load a deploy is waiting for (two cores on the reference
#: machine), but a model that loads for minutes must not leave its runtime without a spare.
MAX_REFILL_WAIT = 30.0
#: Seconds more after that (the worker's first requests).
REFILL_DELAY = 0.5

#: Variables read when the interpreter starts or while MLflow's dependencies are imported (numpy's
#: thread pools): a spare has done both already, so a version setting one gets a fresh worker.
_STARTUP_PREFIXES = ("PYTHON", "LD_", "MALLOC_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "VECLIB_")


def can_take_over(env: Mapping[str, str] | tuple[tuple[str, str], ...]) -> bool:
    """Whether a spare, already started, can run a version with these variables."""
    names = env.keys() if isinstance(env, Mapping) else (name for name, _ in env)
    return not any(name.startswith(_STARTUP_PREFIXES) for name in names)


@dataclass(eq=False)
class Spare:
    process: Any
    #: Set once the spare has written ``READY_LINE`` (its imports done, waiting on stdin).
    ready: bool = False
    watch: asyncio.Task | None = field(default=None, repr=False)

    @property
    def usable(self) -> bool:
        return self.ready and self.process.returncode is None


async def watch_until_ready(spare: Spare, tail_lines: int = 20) -> None:
    """Read the spare's stdout until its ready line; if it exits first, log why (its output)."""
    tail: list[bytes] = []
    while line := await spare.process.stdout.readline():
        if line == READY_LINE:
            spare.ready = True
            return
        tail = [*tail[-(tail_lines - 1):], line]
    log.warning("a spare worker (pid %s) exited before it was ready:\n%s", spare.process.pid,
                b"".join(tail).decode(errors="replace").rstrip())


class SparePool:
    """Spares per runtime. ``spawn(key)`` starts one; ``stop(process)`` ends one."""

    def __init__(self, per_runtime: int, spawn: Callable[[SpareKey], Awaitable[Spare]],
                 stop: Callable[[Any], Awaitable[None]], refill_delay: float = REFILL_DELAY):
        self.per_runtime = per_runtime
        self.spawn = spawn
        self.stop = stop
        self.refill_delay = refill_delay
        self.spares: dict[SpareKey, list[Spare]] = {}
        self._refills: dict[SpareKey, asyncio.Task] = {}
        self._closed = False

    def take(self, key: SpareKey) -> Spare | None:
        """A ready spare for ``key`` (now the caller's), or None (start a fresh worker)."""
        if self.per_runtime <= 0 or self._closed:
            return None
        spares = self._alive(key)
        taken = next((spare for spare in spares if spare.usable), None)
        if taken is not None:
            spares.remove(taken)
        return taken

    def refill(self, key: SpareKey, after: Callable[[], Awaitable[Any]] | None = None) -> None:
        """``key`` has started a worker: (re)fill its spares in the background, once ``after()``
        (the worker just started is ready) returns, at most ``MAX_REFILL_WAIT`` seconds on.
        Waiting keeps the replacement's imports off the CPU the model load is using."""
        if self.per_runtime <= 0 or self._closed:
            return
        self._alive(key)
        running = self._refills.get(key)
        if running is None or running.done():
            self._refills[key] = asyncio.create_task(self._refill(key, after), name=f"spares-{key[0]}")

    async def close(self) -> None:
        self._closed = True
        for task in self._refills.values():
            task.cancel()
        await asyncio.gather(*self._refills.values(), return_exceptions=True)
        spares = [spare for group in self.spares.values() for spare in group]
        self.spares.clear()
        for spare in spares:
            if spare.watch is not None:
                spare.watch.cancel()
        await asyncio.gather(*(self.stop(spare.process) for spare in spares), return_exceptions=True)

    def _alive(self, key: SpareKey) -> list[Spare]:
        """The key's spares, dead ones dropped (a dead spare is simply replaced)."""
        spares = self.spares.setdefault(key, [])
        spares[:] = [spare for spare in spares if spare.process.returncode is None]
        return spares

    async def _refill(self, key: SpareKey, after: Callable[[], Awaitable[Any]] | None) -> None:
        if after is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(after(), MAX_REFILL_WAIT)
        await asyncio.sleep(self.refill_delay)
        while not self._closed and len(self._alive(key)) < self.per_runtime:
            try:
                spare = await self.spawn(key)
            except Exception:
                # Not retried here: the next start of this runtime tries again.
                log.exception("could not start a spare worker for %s", key[0])
                return
            if self._closed:
                with contextlib.suppress(Exception):
                    await self.stop(spare.process)
                return
            self.spares[key].append(spare)
