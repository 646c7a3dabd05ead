"""Rate-limit counts shared by every process that serves: the platform and its gateway processes.

Each process admits calls against its own ``RateLimiter`` (exact for its own traffic, on its event
loop) and, every interval, writes what it counted in each window over the last minute to
``aw_rate_usage`` and reads what the others counted there. Admission adds the two, so a limit
holds across gateways; what can pass beyond it is what other processes admit within one exchange
(0.1 s by default, ``AGENTWHARF_SERVING_STATE_INTERVAL_SECONDS``). A process that died keeps its
counts until they are a minute old, as its calls would have.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson
from sqlalchemy import select

from agentwharf.llm.limits import WINDOW_SECONDS, RateLimit, RateLimiter
from agentwharf.store.database import Database
from agentwharf.store.models import RateUsage

log = logging.getLogger("agentwharf.shared_limits")

WindowKey = tuple[str, RateLimit, str]


def window_name(key: WindowKey) -> str:
    endpoint, limit, subject = key
    return orjson.dumps([endpoint, limit.key, limit.principal, limit.calls, limit.tokens, subject]).decode()


def window_key(name: str) -> WindowKey:
    endpoint, key, principal, calls, tokens, subject = orjson.loads(name)
    return endpoint, RateLimit(key, principal, calls, tokens), subject


class SharedRateCounts:
    def __init__(self, db: Database, limiter: RateLimiter, process: str, limited: Callable[[], bool] = lambda: True):
        self.db = db
        self.limiter = limiter
        #: Whether any endpoint this process serves has rate limits: without one there is
        #: nothing to share, and an idle platform does not read the database every interval.
        self.limited = limited
        #: This process's name in ``aw_rate_usage``: ``platform`` or ``gateway-<N>``.
        self.process = process
        self._written: dict[str, tuple[int, int]] = {}

    def exchange(self, own: dict[WindowKey, tuple[int, int]]) -> dict[WindowKey, tuple[int, int]]:
        """Write this process's changed counts, read the others' (in a thread)."""
        now = time.time()
        named = {window_name(key): counts for key, counts in own.items()}
        changed = {name: counts for name, counts in named.items() if self._written.get(name) != counts}
        with self.db.session() as session:
            for name, (calls, tokens) in changed.items():
                session.merge(RateUsage(process=self.process, window=name, calls=calls, tokens=tokens, updated_at=now))
            rows = session.execute(select(RateUsage.window, RateUsage.calls, RateUsage.tokens).where(
                RateUsage.process != self.process, RateUsage.updated_at > now - WINDOW_SECONDS,
                (RateUsage.calls > 0) | (RateUsage.tokens > 0))).all()
        self._written.update(changed)
        others: dict[WindowKey, tuple[int, int]] = {}
        for name, calls, tokens in rows:
            key = window_key(name)
            before = others.get(key, (0, 0))
            others[key] = (before[0] + calls, before[1] + tokens)
        return others

    async def run(self, interval: float) -> None:
        while True:
            try:
                if self.limited():
                    others = await asyncio.to_thread(self.exchange, self.limiter.own_counts())
                    self.limiter.set_others(others)
            except Exception:  # the database briefly locked or away: the next round retries
                log.warning("exchanging rate-limit counts failed; retrying", exc_info=True)
                self._written.clear()
            await asyncio.sleep(interval)
