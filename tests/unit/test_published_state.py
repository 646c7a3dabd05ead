"""The serving state the platform publishes for gateway processes, and what a gateway makes of
it: over a real (SQLite) database, with the publisher and the mirror of two "processes"."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from agentwharf.llm.limits import RateLimit, RateLimiter
from agentwharf.llm.shared_limits import SharedRateCounts
from agentwharf.errors import RequestLimitExceeded
from agentwharf.serving.published import (PublishedVersion, Sealer, StateMirror, StatePublisher, routes_from_json,
                                          routes_to_json)
from agentwharf.serving.routing import EndpointRoutes, LlmRoute, RouteTable
from agentwharf.serving.shadow import ShadowTarget
from agentwharf.store.database import Database

KEY = b"k" * 32


def _routes(name: str = "bot", token: str = "aws_secret.sig") -> EndpointRoutes:
    return EndpointRoutes(name=name, entities={"v1": f"{name}/v1"}, routes=((f"{name}/v1", 100),), experiment_id="7",
                          models={f"{name}/v1": ("main.x.bot", "1")}, user_scopes={f"{name}/v1": ("serving.serving-endpoints",)},
                          system_tokens={f"{name}/v1": token}, limits=(RateLimit("user", None, 5, None),))


@dataclass
class _Connection:
    closed: bool = False


@dataclass
class _Replica:
    address: str
    connection: _Connection | None = None
    secret: str = ""


@dataclass
class _Version:
    state: str
    replicas: list = field(default_factory=list)
    error: str | None = None


class _Control:
    """What the publisher reads of the control process: its route table, versions, identities."""

    def __init__(self, db: Database):
        self.routes = RouteTable()
        self.versions: dict[str, _Version] = {}
        self.revision = 1
        self.shadows: dict[str, ShadowTarget] = {}
        self.demand: list[tuple[str, float, bool]] = []
        self.publisher = StatePublisher(db, self.routes, lambda: self.versions, lambda: self.revision, Sealer(KEY),
                                        lambda *args: self.demand.append(args), shadows=lambda: self.shadows)

    def publish(self) -> None:
        if changes := self.publisher._changes():
            self.publisher.write(changes)


def _sync(mirror: StateMirror) -> None:
    mirror.apply(mirror.refresh())


def test_routes_survive_the_trip_through_json_with_the_system_token_sealed():
    sealer = Sealer(KEY)
    data = routes_to_json(_routes(), sealer)
    assert "aws_secret" not in str(data)
    assert routes_from_json(data, sealer) == _routes()
    llm = EndpointRoutes(name="llm", entities={}, routes=(), llm=LlmRoute("llm/v1/chat", {"a": "gpt"}))
    assert routes_from_json(routes_to_json(llm, sealer), sealer) == llm
    with pytest.raises(Exception):  # another home's key cannot open it
        routes_from_json(data, Sealer(b"other" * 8))


def test_a_gateway_mirrors_routes_versions_and_shadows_and_sees_them_go(db):
    control = _Control(db)
    control.routes.set(_routes())
    control.versions["bot/v1"] = _Version("READY", [_Replica("unix:/run/w-1.sock", _Connection()), _Replica("unix:/run/w-2.sock"),
                                                    _Replica("tcp://127.0.0.1:9", _Connection(), secret="s3cret")])
    control.shadows = {"bot": ShadowTarget("v2", 20)}
    control.publish()
    mirror = StateMirror(db, Sealer(KEY))
    _sync(mirror)
    assert mirror.routes.get("bot") == _routes()
    # Only the workers that answer are published; a TCP worker's secret travels sealed.
    assert mirror.versions["bot/v1"] == PublishedVersion("READY", (("unix:/run/w-1.sock", ""), ("tcp://127.0.0.1:9", "s3cret")))
    assert "s3cret" not in str(db.engine.connect().exec_driver_sql("SELECT payload FROM aw_serving_state").all())
    assert mirror.shadows == {"bot": ShadowTarget("v2", 20)}
    assert mirror.system_token_live("bot", "v1", "aws_secret.sig")
    assert not mirror.system_token_live("bot", "v1", "aws_other.sig")
    generation = mirror.generation
    _sync(mirror)  # nothing changed: nothing read
    assert mirror.generation == generation
    control.routes.remove("bot")
    control.versions.clear()
    control.shadows = {}
    control.publish()
    _sync(mirror)
    assert mirror.routes.get("bot") is None and mirror.versions == {} and mirror.shadows == {}


def test_a_restarted_control_process_removes_what_it_no_longer_runs(db):
    first = _Control(db)
    first.routes.set(_routes("old"))
    first.routes.set(_routes("kept"))
    first.publish()
    mirror = StateMirror(db, Sealer(KEY))
    _sync(mirror)
    assert set(mirror.routes.names()) == {"old", "kept"}
    second = _Control(db)  # the same database, a new process that restored only "kept"
    second.routes.set(_routes("kept"))
    second.publish()
    _sync(mirror)
    assert mirror.routes.names() == ["kept"]


def test_identity_changes_make_gateways_reload(db):
    control = _Control(db)
    reloads = []
    mirror = StateMirror(db, Sealer(KEY), on_identities=lambda: reloads.append(1))
    control.publish()
    _sync(mirror)
    assert len(reloads) == 1
    control.revision += 1  # a token created or revoked on the control process
    control.publish()
    _sync(mirror)
    assert len(reloads) == 2


def test_demand_from_a_gateway_reaches_the_supervisor(db):
    control = _Control(db)
    mirror = StateMirror(db, Sealer(KEY))
    mirror.note_use("bot/v1")
    mirror.note_use("bot/v2", wake=True)
    mirror.flush_demand()
    control.publisher.apply_demand(control.publisher.read_demand())
    seen = {key: wake for key, _idle, wake in control.demand}
    assert seen == {"bot/v1": False, "bot/v2": True}
    assert all(idle < 5 for _key, idle, _wake in control.demand)
    control.demand.clear()
    control.publisher.apply_demand(control.publisher.read_demand())  # told once
    assert control.demand == []


def test_rate_limits_count_the_other_processes_calls(db):
    limit = (RateLimit("endpoint", None, 3, None),)

    async def scenario():
        one, two = RateLimiter(), RateLimiter()
        shared_one, shared_two = SharedRateCounts(db, one, "gateway-1"), SharedRateCounts(db, two, "gateway-2")
        for _ in range(2):
            await one.admit("bot", limit, "alice", "user")
        shared_one.exchange(one.own_counts())
        two.set_others(shared_two.exchange(two.own_counts()))
        await two.admit("bot", limit, "bob", "user")  # the third call of the minute
        with pytest.raises(RequestLimitExceeded) as refused:
            await two.admit("bot", limit, "bob", "user")
        assert refused.value.retry_after > 0
        one.set_others(shared_one.exchange(one.own_counts()))
        shared_two.exchange(two.own_counts())
        one.set_others(shared_one.exchange(one.own_counts()))
        with pytest.raises(RequestLimitExceeded):
            await one.admit("bot", limit, "alice", "user")

    asyncio.run(scenario())


def test_a_dead_processs_counts_stop_counting_after_a_minute(db, monkeypatch):
    limit = (RateLimit("endpoint", None, 1, None),)

    async def scenario():
        dead, alive = RateLimiter(), RateLimiter()
        await dead.admit("bot", limit, "alice", "user")
        SharedRateCounts(db, dead, "gateway-1").exchange(dead.own_counts())
        shared = SharedRateCounts(db, alive, "gateway-2")
        alive.set_others(shared.exchange(alive.own_counts()))
        with pytest.raises(RequestLimitExceeded):
            await alive.admit("bot", limit, "bob", "user")
        later = time.time() + 61
        monkeypatch.setattr(time, "time", lambda: later)
        alive.set_others(shared.exchange({}))
        assert await alive.admit("bot", limit, "bob", "user") is not None

    asyncio.run(scenario())


@dataclass
class _Spec:
    scale_to_zero: bool


@dataclass
class _ServedVersion(_Version):
    spec: _Spec = field(default_factory=lambda: _Spec(scale_to_zero=False))


def _rounds(coroutine_factory, seconds: float = 0.35) -> None:
    async def run_a_while():
        task = asyncio.create_task(coroutine_factory())
        await asyncio.sleep(seconds)
        task.cancel()

    asyncio.run(run_a_while())


def test_gateways_demand_is_read_only_while_a_version_scales_to_zero(db, monkeypatch):
    """Demand keeps a version up and wakes it from zero; with no version that scales to zero the
    publisher does not read it every round (an idle platform's CPU went there)."""
    control = _Control(db)
    mirror = StateMirror(db, Sealer(KEY))
    reads = []
    original = control.publisher.read_demand
    monkeypatch.setattr(control.publisher, "read_demand", lambda: reads.append(1) or original())
    control.versions = {"bot/v1": _ServedVersion("READY", spec=_Spec(scale_to_zero=False))}
    _rounds(lambda: control.publisher.run(interval=0.05))
    assert reads == []
    control.versions["bot/v2"] = _ServedVersion("READY", spec=_Spec(scale_to_zero=True))
    mirror.note_use("bot/v2", wake=True)
    mirror.flush_demand()
    _rounds(lambda: control.publisher.run(interval=0.05))
    assert reads and ("bot/v2", True) in {(key, wake) for key, _idle, wake in control.demand}


def test_rate_counts_are_shared_only_while_an_endpoint_has_limits(db):
    """Without an endpoint with rate limits there is nothing to share: no exchange each round.
    Once one has limits, the other process's calls count here within a round."""
    limit = _routes().limits
    routes = RouteTable()

    async def scenario():
        one, two = RateLimiter(), RateLimiter()
        for _ in range(4):
            await one.admit("bot", limit, "alice", "user")
        SharedRateCounts(db, one, "gateway-1").exchange(one.own_counts())
        shared = SharedRateCounts(db, two, "gateway-2", routes.any_limited)
        exchanges = []
        original = shared.exchange
        shared.exchange = lambda own: exchanges.append(1) or original(own)
        task = asyncio.create_task(shared.run(0.05))
        await asyncio.sleep(0.3)
        assert exchanges == []
        routes.set(_routes())
        await asyncio.sleep(0.3)
        task.cancel()
        assert exchanges
        await two.admit("bot", limit, "alice", "user")  # alice's fifth call of the minute (limit 5)
        with pytest.raises(RequestLimitExceeded):
            await two.admit("bot", limit, "alice", "user")

    asyncio.run(scenario())
