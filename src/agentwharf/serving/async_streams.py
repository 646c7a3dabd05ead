"""An async agent's stream, read from a pool thread.

The routes that reshape a stream (``/responses``, ``/chat/completions``) do it with plain
generators over the model's events (``Dialect.events``), which pull the next event when they
need it: they cannot wait for an async generator. For those routes the worker runs the reshaping
in a pool thread as for a synchronous agent, and this iterator advances the agent's async
generator on the worker's event loop, one step at a time. The native route needs no reshaping
and awaits the generator in the request's task, without a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any


def pulled(events: AsyncIterator[Any], loop: asyncio.AbstractEventLoop,
           around: Callable[[], AbstractContextManager]) -> Iterator[Any]:
    """``events`` as a plain iterator for a thread other than ``loop``'s. Each step runs as its
    own task on ``loop`` inside ``around()`` (the request's trace capture and credentials: a new
    task does not see the thread's context). Closing this closes ``events`` on the loop."""

    async def step() -> Any:
        with around():
            return await events.__anext__()

    async def close() -> None:
        with around():
            closer = getattr(events, "aclose", None)
            if closer is not None:
                await closer()

    try:
        while True:
            try:
                yield asyncio.run_coroutine_threadsafe(step(), loop).result()
            except StopAsyncIteration:
                return
    finally:
        asyncio.run_coroutine_threadsafe(close(), loop).result()
