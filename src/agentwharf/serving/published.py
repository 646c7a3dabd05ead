"""The serving state gateway processes read, published by the control process in the database.

One control process owns the desired state: its reconciler builds every endpoint's routes, its
supervisor runs the workers, its identity service holds tokens and grants. Gateway processes
(``agentwharf gateway``) serve requests from a copy of that state and hold nothing only they
know, so any of them can die or be added at any time:

    control process                         database                  gateway process
    RouteTable, supervisor, identities  ->  aw_serving_state      ->  StateMirror -> Gateway
    (StatePublisher, every 0.2 s)       <-  aw_serving_demand     <-  (requests served, cold starts)

Every published row carries a generation that grows with each change, so a gateway asks only
for the highest generation (one index lookup) and reads rows only when it moved. A removed item
keeps its row with no payload. A model's system credential travels sealed with a key derived
from the home's signing key (gateways verify tokens with that key anyway); nothing else in the
rows is secret. Gateways tell the control process which versions they used (an idle timeout
counts every gateway's traffic) and which versions a request waits for (a cold start).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, select, text

from agentwharf.llm.limits import RateLimit
from agentwharf.serving.routing import EndpointRoutes, LlmRoute, RouteTable
from agentwharf.serving.shadow import ShadowTarget
from agentwharf.store.database import Database
from agentwharf.store.models import ServingDemand, ServingState

log = logging.getLogger("agentwharf.published")

ROUTE, VERSION, IDENTITIES, SHADOW = "route", "version", "identities", "shadow"
#: PostgreSQL: wakes listening gateways at once (they poll anyway, so a lost notice only delays).
_NOTIFY = text("NOTIFY aw_serving_state")


class Sealer:
    """Seals the few secrets published state carries (models' system credentials)."""

    def __init__(self, signing_key: bytes):
        self._aead = AESGCM(hashlib.sha256(b"agentwharf published state\0" + signing_key).digest())

    def seal(self, text: str) -> str:
        nonce = os.urandom(12)
        return base64.urlsafe_b64encode(nonce + self._aead.encrypt(nonce, text.encode(), None)).decode()

    def unseal(self, sealed: str) -> str:
        raw = base64.urlsafe_b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], None).decode()


def routes_to_json(routes: EndpointRoutes, sealer: Sealer) -> dict:
    return {
        "name": routes.name, "entities": routes.entities, "routes": [list(route) for route in routes.routes],
        "experiment_id": routes.experiment_id, "models": {k: list(v) for k, v in routes.models.items()},
        "user_scopes": {k: list(v) for k, v in routes.user_scopes.items()},
        "system_tokens": {k: sealer.seal(v) for k, v in routes.system_tokens.items()},
        "updating": routes.updating, "update_failed": routes.update_failed,
        "llm": None if routes.llm is None else {"task": routes.llm.task, "models": routes.llm.models},
        "limits": [[limit.key, limit.principal, limit.calls, limit.tokens] for limit in routes.limits],
    }


def routes_from_json(data: dict, sealer: Sealer) -> EndpointRoutes:
    llm = data["llm"]
    return EndpointRoutes(
        name=data["name"], entities=data["entities"], routes=tuple((key, share) for key, share in data["routes"]),
        experiment_id=data["experiment_id"], models={k: (v[0], v[1]) for k, v in data["models"].items()},
        user_scopes={k: tuple(v) for k, v in data["user_scopes"].items()},
        system_tokens={k: sealer.unseal(v) for k, v in data["system_tokens"].items()},
        updating=data["updating"], update_failed=data["update_failed"],
        llm=None if llm is None else LlmRoute(task=llm["task"], models=llm["models"]),
        limits=tuple(RateLimit(*limit) for limit in data["limits"]),
    )


@dataclass(frozen=True)
class PublishedVersion:
    """A served version as gateways see it: its state and its answering workers, each as
    (address, TCP handshake secret or ""); the secrets travel sealed."""

    state: str
    workers: tuple[tuple[str, str], ...] = ()
    error: str | None = None

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(address for address, _secret in self.workers)

    def to_json(self, sealer: Sealer) -> dict:
        return {"state": self.state, "error": self.error,
                "workers": [[address, sealer.seal(secret) if secret else ""] for address, secret in self.workers]}

    @classmethod
    def from_json(cls, data: dict, sealer: Sealer) -> PublishedVersion:
        workers = tuple((address, sealer.unseal(secret) if secret else "") for address, secret in data["workers"])
        return cls(data["state"], workers, data.get("error"))


def version_view(version) -> PublishedVersion:
    """What gateways need of a supervisor's ``ServedVersion``."""
    workers = tuple((str(replica.address), replica.secret) for replica in version.replicas
                    if replica.connection is not None and not replica.connection.closed and replica.address is not None)
    return PublishedVersion(version.state, workers, version.error)


class StatePublisher:
    """The control process's side: writes what changed, and applies what gateways asked for.

    It compares snapshots rather than hooking every change: routes are swapped whole (an
    identity check), versions are few, and the identity service counts its reloads.
    """

    def __init__(self, db: Database, routes: RouteTable, versions: Callable[[], dict], identities_revision: Callable[[], int],
                 sealer: Sealer, note_demand: Callable[[str, float, bool], None],
                 shadows: Callable[[], dict[str, ShadowTarget]] = dict):
        #: The running shadow rollouts' targets: every gateway makes the copies of its own traffic.
        self.shadows = shadows
        self._shadows_seen: dict[str, ShadowTarget] = {}
        self.db = db
        self.routes = routes
        self.versions = versions
        self.identities_revision = identities_revision
        self.sealer = sealer
        self.note_demand = note_demand
        self._routes_seen: dict[str, EndpointRoutes] = {}
        self._versions_seen: dict[str, PublishedVersion] = {}
        self._identities_seen: int | None = None
        self._generation = 0
        #: gateway -> the latest use or wake-up of it already told to the supervisor.
        self._demand_seen: dict[str, float] = {}

    def _changes(self) -> list[tuple[str, str, dict | None]]:
        changes: list[tuple[str, str, dict | None]] = []
        # Compared in the clear, sealed only when written: a sealing differs every time.
        current = {name: self.routes.get(name) for name in self.routes.names()}
        for name, routes in current.items():
            if self._routes_seen.get(name) is not routes:
                changes.append((ROUTE, name, routes_to_json(routes, self.sealer)))
        changes += [(ROUTE, name, None) for name in self._routes_seen.keys() - current.keys()]
        self._routes_seen = current
        versions = {key: version_view(version) for key, version in self.versions().items()}
        changes += [(VERSION, key, view.to_json(self.sealer)) for key, view in versions.items()
                    if self._versions_seen.get(key) != view]
        changes += [(VERSION, key, None) for key in self._versions_seen.keys() - versions.keys()]
        self._versions_seen = versions
        shadows = dict(self.shadows())
        changes += [(SHADOW, name, {"entity": target.entity, "percent": target.percent})
                    for name, target in shadows.items() if self._shadows_seen.get(name) != target]
        changes += [(SHADOW, name, None) for name in self._shadows_seen.keys() - shadows.keys()]
        self._shadows_seen = shadows
        revision = self.identities_revision()
        if revision != self._identities_seen:
            changes.append((IDENTITIES, "all", {"revision": revision}))
            self._identities_seen = revision
        return changes

    def write(self, changes: list[tuple[str, str, dict | None]]) -> None:
        """Write what ``_changes`` found (in a thread: the snapshot itself is taken on the loop)."""
        with self.db.session() as session:
            if not self._generation:
                self._generation = session.scalar(select(func.max(ServingState.generation))) or 0
                changes = changes + self._left_from_before(session, {(kind, name) for kind, name, _ in changes})
            self._generation += 1
            for kind, name, payload in changes:
                session.merge(ServingState(kind=kind, name=name, generation=self._generation,
                                           payload=None if payload is None else orjson.dumps(payload).decode()))
            if self.db.engine.dialect.name == "postgresql":
                session.execute(_NOTIFY)

    @staticmethod
    def _left_from_before(session, current: set[tuple[str, str]]) -> list[tuple[str, str, None]]:
        """A restarted control process starts from what it runs now: whatever an earlier run
        published and this one does not run is removed for the gateways too."""
        published = session.execute(select(ServingState.kind, ServingState.name).where(
            ServingState.payload.is_not(None), ServingState.kind != IDENTITIES)).all()
        return [(kind, name, None) for kind, name in published if (kind, name) not in current]

    def _demand_matters(self) -> bool:
        """Gateways' demand keeps a version up and wakes it: only versions that scale to zero
        need it. Without one, the database is not read every interval (that, and the thread
        hop, were most of an idle platform's ~6% of a core)."""
        return any(version.spec.scale_to_zero for version in self.versions().values())

    def read_demand(self) -> list[tuple[str, str, float, float | None]]:
        """What gateways reported since last time (in a thread; ``apply_demand`` on the loop)."""
        # Read by the oldest of the gateways' marks; each gateway's rows are then judged by its own
        # (their clocks are one machine's, but their writes land in any order).
        oldest = min(self._demand_seen.values(), default=0.0)
        with self.db.session() as session:
            return [tuple(row) for row in session.execute(
                select(ServingDemand.process, ServingDemand.key, ServingDemand.used_at, ServingDemand.wake_at).where(
                    (ServingDemand.used_at > oldest) | (ServingDemand.wake_at > oldest)))]

    def apply_demand(self, rows: list[tuple[str, str, float, float | None]]) -> None:
        """Tell the supervisor what gateways used and what requests wait for (cold starts)."""
        now = time.time()
        for process, key, used_at, wake_at in rows:
            seen = self._demand_seen.get(process, 0.0)
            if used_at > seen or (wake_at or 0.0) > seen:
                self.note_demand(key, max(0.0, now - used_at), wake_at is not None and wake_at > seen)
        for process, _key, used_at, wake_at in rows:
            self._demand_seen[process] = max(self._demand_seen.get(process, 0.0), used_at, wake_at or 0.0)

    async def run(self, interval: float = 0.2) -> None:
        while True:
            try:
                if changes := self._changes():
                    await asyncio.to_thread(self.write, changes)
                if self._demand_matters():
                    self.apply_demand(await asyncio.to_thread(self.read_demand))
            except Exception:  # the database is briefly locked or away: the next round retries
                log.warning("publishing serving state failed; retrying", exc_info=True)
                self._routes_seen, self._versions_seen, self._shadows_seen, self._identities_seen = {}, {}, {}, None
            await asyncio.sleep(interval)


class StateMirror:
    """A gateway process's side: a ``RouteTable`` and the versions' workers, kept in step with
    what the control process published, and the demand this gateway reports back."""

    def __init__(self, db: Database, sealer: Sealer, on_identities: Callable[[], None] | None = None,
                 on_llm_route: Callable[[str, bool], object] | None = None, process: str = "gateway-1"):
        #: This gateway's name in ``aw_serving_demand``.
        self.process = process
        self.db = db
        self.sealer = sealer
        self.routes = RouteTable()
        self.versions: dict[str, PublishedVersion] = {}
        #: endpoint -> where its shadow copies go (a running shadow rollout).
        self.shadows: dict[str, ShadowTarget] = {}
        self.on_identities = on_identities
        self.on_llm_route = on_llm_route
        self.generation = -1
        #: key -> wall time this gateway last sent it a request / asked for it to start.
        self._used: dict[str, float] = {}
        self._wake: dict[str, float] = {}
        self._changed = asyncio.Event()
        #: Set to read (and report) now rather than at the next interval: a NOTIFY, a cold start.
        self._poke = asyncio.Event()

    def note_use(self, key: str, wake: bool = False) -> None:
        self._used[key] = time.time()
        if wake:
            self._wake[key] = time.time()
            self._poke.set()

    def system_token_live(self, endpoint: str, entity: str, token: str) -> bool:
        routes = self.routes.get(endpoint)
        current = routes.system_tokens.get(f"{endpoint}/{entity}") if routes is not None else None
        return current is not None and _same(current, token)

    def _read_changes(self) -> list[tuple[str, str, str | None, int]]:
        with self.db.session() as session:
            top = session.scalar(select(func.max(ServingState.generation))) or 0
            if top == self.generation:
                return []
            if top < self.generation:  # the control process started over: read everything
                self.generation = -1
            return [tuple(row) for row in session.execute(
                select(ServingState.kind, ServingState.name, ServingState.payload, ServingState.generation)
                .where(ServingState.generation > self.generation).order_by(ServingState.generation))]

    def refresh(self) -> list[tuple[str, str, str | None, int]]:
        """Read what changed (in a thread); ``apply`` it on the event loop."""
        return self._read_changes()

    def apply(self, rows: list[tuple[str, str, str | None, int]]) -> list[tuple[str, bool]]:
        """Returns the LLM endpoints whose routes changed (name, still there)."""
        llm_changes = []
        for kind, name, payload, generation in rows:
            data = None if payload is None else orjson.loads(payload)
            if kind == ROUTE:
                old = self.routes.get(name)
                if data is None:
                    self.routes.remove(name)
                else:
                    self.routes.set(routes_from_json(data, self.sealer))
                if (old is not None and old.llm is not None) or (data is not None and data["llm"] is not None):
                    llm_changes.append((name, data is not None))
            elif kind == VERSION:
                if data is None:
                    self.versions.pop(name, None)
                else:
                    self.versions[name] = PublishedVersion.from_json(data, self.sealer)
            elif kind == SHADOW:
                shadows = {k: v for k, v in self.shadows.items() if k != name}
                if data is not None:
                    shadows[name] = ShadowTarget(data["entity"], data["percent"])
                self.shadows = shadows
            elif kind == IDENTITIES and self.on_identities is not None:
                self.on_identities()
            self.generation = max(self.generation, generation)
        if rows:
            self._changed.set()
            self._changed = asyncio.Event()
        return llm_changes

    async def wait_changed(self, timeout: float) -> None:
        """Return after the next change read, or after ``timeout``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def take_demand(self) -> tuple[dict[str, float], dict[str, float]]:
        """What to report (on the loop, where requests note it); ``write_demand`` it in a thread."""
        used, wake, self._used, self._wake = self._used, self._wake, {}, {}
        return used, wake

    def give_back(self, used: dict[str, float], wake: dict[str, float]) -> None:
        """Not written (the database was busy): told next time, so no cold start waits for a
        request that asks again."""
        self._used, self._wake = {**used, **self._used}, {**wake, **self._wake}

    def write_demand(self, used: dict[str, float], wake: dict[str, float]) -> None:
        if not used and not wake:
            return
        with self.db.session() as session:
            for key in used.keys() | wake.keys():
                row = session.get(ServingDemand, (self.process, key))
                if row is None:
                    row = ServingDemand(process=self.process, key=key, used_at=0.0)
                    session.add(row)
                row.used_at = max(row.used_at, used.get(key, 0.0))
                if key in wake:
                    row.wake_at = wake[key]

    def flush_demand(self) -> None:
        """Report now (at a gateway's stop)."""
        self.write_demand(*self.take_demand())

    def _listen(self, loop: asyncio.AbstractEventLoop, wake: asyncio.Event, stop: threading.Event) -> None:
        """PostgreSQL: wait for the control process's NOTIFY in a thread, and wake the loop."""
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as connection:
                    connection.execute("LISTEN aw_serving_state")
                    while not stop.is_set():
                        for _notice in connection.notifies(timeout=1.0, stop_after=1):
                            loop.call_soon_threadsafe(wake.set)
            except Exception:  # the database restarted: listen again (polling goes on meanwhile)
                log.warning("listening for serving state changes failed; retrying", exc_info=True)
                stop.wait(1.0)

    async def run(self, interval: float = 0.1, after_apply: Callable[[], None] | None = None) -> None:
        """Read changes every ``interval``; on PostgreSQL also at once when notified (and then
        polling is only the safety net, every ten intervals)."""
        wake, stop = self._poke, threading.Event()
        if self.db.engine.dialect.name == "postgresql":
            threading.Thread(target=self._listen, args=(asyncio.get_running_loop(), wake, stop),
                             name="serving-state-listener", daemon=True).start()
            interval *= 10
        try:
            await self._follow(interval, wake, after_apply)
        finally:
            stop.set()

    async def _follow(self, interval: float, wake: asyncio.Event, after_apply: Callable[[], None] | None) -> None:
        while True:
            try:
                rows = await asyncio.to_thread(self.refresh)
                changed_llm = self.apply(rows)
                if rows and after_apply is not None:
                    after_apply()
                for name, exists in changed_llm:
                    if self.on_llm_route is not None:
                        with contextlib.suppress(Exception):
                            await self.on_llm_route(name, exists)
                demand = self.take_demand()
                try:
                    await asyncio.to_thread(self.write_demand, *demand)
                except Exception:
                    self.give_back(*demand)
                    raise
            except Exception:
                log.warning("reading the published serving state failed; retrying", exc_info=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), interval)
            wake.clear()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
