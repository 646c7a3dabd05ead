"""The platform's quality loop. Every second: keeps the scoring process running while any
experiment has active scorers, tells it which environment each served version runs in, builds
the registered environments scorers asked for, and posts alert webhooks that are due. Every
``monitor_interval_seconds``: refreshes the monitoring metrics (``exporter``), evaluates alert
rules (``alerts``), runs review rules (``review_rules``) and prunes old results. One step failing never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from sqlalchemy import delete, text

from agentwharf.quality import alerts, review_rules, scorer_envs
from agentwharf.quality.exporter import QualitySnapshot
from agentwharf.quality.scoring_process import ScoringProcess
from agentwharf.store.database import Database
from agentwharf.store.models import MonitorScore

log = logging.getLogger("agentwharf.quality")

_ACTIVE = text("SELECT 1 FROM online_scoring_configs WHERE sample_rate > 0 LIMIT 1")
#: The scoring process stops after this long without any active scorer (its memory back).
IDLE_STOP_SECONDS = 300.0
ACTIVE_CHECK_SECONDS = 1.0


def has_active_scorers(db: Database) -> bool:
    try:
        with db.session() as session:
            return session.execute(_ACTIVE).first() is not None
    except Exception:  # MLflow's tables not there yet
        return False


def write_if_changed(path: Path, data: dict) -> None:
    payload = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    try:
        if path.read_bytes() == payload:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_bytes(payload)
    os.replace(temp, path)


class QualityMonitor:
    def __init__(self, db: Database, scoring: ScoringProcess, served_environments: Callable[[], dict[str, str]],
                 environments_file: Path, interval: float, retention_days: float,
                 deliveries: alerts.Deliveries | None = None,
                 prepare_environment: Callable[[str, str, Path], Awaitable[str]] | None = None,
                 logs_dir: Path | None = None, tracking_store: Callable[[], object] | None = None):
        self.db = db
        self.scoring = scoring
        self.served_environments = served_environments
        self.environments_file = environments_file
        self.interval = interval
        self.retention_days = retention_days
        self.deliveries = deliveries
        self.prepare_environment = prepare_environment
        self.logs_dir = logs_dir or environments_file.parent
        #: () -> MLflow's SQL store of the platform's database (review rules add queue items).
        self.tracking_store = tracking_store
        #: What /metrics shows of online scoring and alerts (refreshed every interval).
        self.snapshot = QualitySnapshot()
        self._idle_since: float | None = None
        self._last_periodic = float("-inf")

    async def run(self) -> None:
        while True:
            every_second = [self._tend_scoring, self._build_environments, self._deliver]
            periodic = [self._refresh, self._review, self._prune] if time.monotonic() - self._last_periodic >= self.interval else []
            if periodic:
                self._last_periodic = time.monotonic()
            for step in [*every_second, *periodic]:
                try:
                    await step()
                except Exception:
                    log.exception("quality loop: %s failed", getattr(step, "__name__", step))
            await asyncio.sleep(ACTIVE_CHECK_SECONDS)

    async def _tend_scoring(self) -> None:
        active = await asyncio.to_thread(has_active_scorers, self.db)
        now = time.monotonic()
        if active:
            self._idle_since = None
            await asyncio.to_thread(write_if_changed, self.environments_file, self.served_environments())
        elif self._idle_since is None:
            self._idle_since = now
        if not active and self.scoring.running and now - self._idle_since > IDLE_STOP_SECONDS:
            log.info("no active scorers for %.0fs: stopping the scoring process", IDLE_STOP_SECONDS)
            await self.scoring.stop()
            return
        self.scoring.ensure(active)

    async def _build_environments(self) -> None:
        if self.prepare_environment is not None:
            await scorer_envs.build_pending(self.db, self.prepare_environment, self.logs_dir)

    async def _deliver(self) -> None:
        if self.deliveries is not None:
            await self.deliveries.deliver_due()

    async def _refresh(self) -> None:
        """Alert rules first (their events are delivered within a second), then the metrics."""
        now = int(time.time() * 1000)
        await asyncio.to_thread(alerts.evaluate, self.db, now)
        await asyncio.to_thread(self.snapshot.refresh, self.db, now)
        if self.deliveries is not None:
            await self.deliveries.deliver_due()

    async def _review(self) -> None:
        if self.tracking_store is not None:
            await asyncio.to_thread(review_rules.run, self.db, self.tracking_store())

    async def _prune(self) -> None:
        cutoff = int((time.time() - self.retention_days * 86400) * 1000)

        def prune() -> None:
            with self.db.session() as session:
                session.execute(delete(MonitorScore).where(MonitorScore.answered_ms < cutoff))

        await asyncio.to_thread(prune)

    async def stop(self) -> None:
        await self.scoring.stop()
        if self.deliveries is not None:
            await self.deliveries.close()
