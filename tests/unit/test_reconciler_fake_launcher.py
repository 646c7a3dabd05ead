"""The reconciler turning endpoints stored in the database into workers and routes, with the real
supervisor over a fake ``WorkerLauncher`` (``fake_launcher``): what runs, where traffic goes,
and what a config update does when its new version loads or does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import select

from agentwharf.auth.model_policy import ModelPolicy
from agentwharf.control.reconciler import Reconciler
from agentwharf.serving.routing import RouteTable
from agentwharf.serving.supervisor import Supervisor
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint, ServedEntity
from tests.unit.fake_launcher import FakeLauncher, until

NAME = "agents_main-m"


def _parts(db: Database, run_dir: Path) -> tuple[FakeLauncher, Supervisor, RouteTable, Reconciler]:
    launcher = FakeLauncher()
    supervisor = Supervisor(launcher, run_dir, run_dir / "logs", start_timeout=5, backoff_min=0.05, backoff_max=0.2,
                            idle_seconds=60, cold_start_timeout=5)
    routes = RouteTable()
    reconciler = Reconciler(db, supervisor, routes, {"Small": 1, "Medium": 2}, start_timeout=5,
                            worker_env=lambda endpoint, entity, policy: {"AGENTWHARF_SERVED_ENTITY": entity.name},
                            model_policy=lambda name, version: ModelPolicy())
    return launcher, supervisor, routes, reconciler


def _store_endpoint(db: Database, *versions: tuple[str, int], pending: tuple[str, ...] = ()) -> None:
    """An endpoint serving ``(version, traffic %)`` pairs; ``pending`` versions are a config
    update in progress that would take all the traffic."""
    with db.session() as session:
        endpoint = Endpoint(id="e1", name=NAME, experiment_id="7",
                            routes=[{"served_model_name": f"m_{v}", "traffic_percentage": share} for v, share in versions],
                            pending_routes=[{"served_model_name": f"m_{v}", "traffic_percentage": 100} for v in pending] or None,
                            update_state="IN_PROGRESS" if pending else "NOT_UPDATING")
        for version in [v for v, _ in versions] + list(pending):
            endpoint.entities.append(ServedEntity(name=f"m_{version}", entity_name="main.m", entity_version=version,
                                                  workload_size="Small", pending=version in pending))
        session.add(endpoint)


def _stored(db: Database) -> Endpoint:
    with db.session() as session:
        endpoint = session.scalar(select(Endpoint).where(Endpoint.name == NAME))
        _ = [e.name for e in endpoint.entities]  # loaded before the session closes
        return endpoint


def test_an_endpoint_gets_its_workers_and_its_traffic_split(db, run_dir):
    async def run():
        launcher, supervisor, routes, reconciler = _parts(db, run_dir)
        _store_endpoint(db, ("1", 80), ("2", 20))
        await reconciler.restore()
        await supervisor.wait_ready(f"{NAME}/m_1", 5)
        await supervisor.wait_ready(f"{NAME}/m_2", 5)
        served = routes.get(NAME)
        assert dict(served.routes) == {f"{NAME}/m_1": 80, f"{NAME}/m_2": 20} and served.experiment_id == "7"
        assert served.models[f"{NAME}/m_2"] == ("main.m", "2")
        assert dict(supervisor.versions[f"{NAME}/m_1"].spec.env) == {"AGENTWHARF_SERVED_ENTITY": "m_1"}
        assert len(launcher.running) == 2
        await supervisor.close()

    asyncio.run(run())


def test_a_config_update_switches_traffic_only_once_the_new_version_answers(db, run_dir):
    async def run():
        launcher, supervisor, routes, reconciler = _parts(db, run_dir)
        _store_endpoint(db, ("1", 100), pending=("2",))
        await reconciler.apply(NAME)
        # Meanwhile the old version keeps all the traffic.
        assert dict(routes.get(NAME).routes) == {f"{NAME}/m_1": 100} and routes.get(NAME).updating
        await until(lambda: _stored(db).pending_routes is None)
        endpoint = _stored(db)
        assert endpoint.config_version == 1 and endpoint.update_state == "NOT_UPDATING"
        assert [e.name for e in endpoint.entities] == ["m_2"]
        await until(lambda: f"{NAME}/m_1" not in supervisor.versions)
        assert dict(routes.get(NAME).routes) == {f"{NAME}/m_2": 100} and not routes.get(NAME).updating
        assert len(launcher.running) == 1
        await supervisor.close()

    asyncio.run(run())


def test_a_config_update_whose_model_fails_to_load_keeps_the_old_version(db, run_dir):
    async def run():
        launcher, supervisor, routes, reconciler = _parts(db, run_dir)
        launcher.refuse.add("models:/main.m/2")
        _store_endpoint(db, ("1", 100), pending=("2",))
        await reconciler.apply(NAME)
        await until(lambda: _stored(db).update_state == "UPDATE_FAILED")
        endpoint = _stored(db)
        assert "no module named 'agent_deps'" in endpoint.update_message and endpoint.pending_routes is None
        assert [e.name for e in endpoint.entities] == ["m_1"]
        await until(lambda: f"{NAME}/m_2" not in supervisor.versions)
        assert dict(routes.get(NAME).routes) == {f"{NAME}/m_1": 100} and routes.get(NAME).update_failed
        await supervisor.close()

    asyncio.run(run())


def test_a_deleted_endpoint_loses_its_routes_and_workers(db, run_dir):
    async def run():
        launcher, supervisor, routes, reconciler = _parts(db, run_dir)
        _store_endpoint(db, ("1", 100))
        await reconciler.apply(NAME)
        await supervisor.wait_ready(f"{NAME}/m_1", 5)
        with db.session() as session:
            session.delete(session.scalar(select(Endpoint).where(Endpoint.name == NAME)))
        await reconciler.apply(NAME)
        assert routes.get(NAME) is None and supervisor.versions == {} and launcher.running == []
        await supervisor.close()

    asyncio.run(run())
