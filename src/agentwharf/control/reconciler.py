"""Turns the desired state in the database into running workers and live routes.

``apply(name)`` is idempotent: it reads one endpoint and makes the supervisor and the route
table match it. A config update first runs its new entities as *pending*; a watcher waits for
them to answer, then promotes the pending config in one transaction (traffic switches only to
versions that answer) or, if a model fails to load, drops it and records why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy import select

from agentwharf.auth.model_policy import ModelPolicy
from agentwharf.errors import AgentwharfError, DeploymentFailed
from agentwharf.llm.ai_gateway import from_stored as settings_from_stored
from agentwharf.serving.routing import EndpointRoutes, LlmRoute, RouteTable, worker_key
from agentwharf.serving.supervisor import Supervisor, WorkerSpec
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint, ServedEntity

log = logging.getLogger("agentwharf.reconciler")


class Reconciler:
    def __init__(
        self,
        db: Database,
        supervisor: Supervisor,
        routes: RouteTable,
        workload_sizes: dict[str, int],
        start_timeout: float,
        worker_env: Callable[[Endpoint, ServedEntity, ModelPolicy], dict[str, str]],
        model_policy: Callable[[str, str], ModelPolicy],
        llm_changed: Callable[[str, bool], Awaitable[None]] | None = None,
    ):
        #: Told after an LLM endpoint's routes change (True) or it is gone (False), so the
        #: gateway reloads it from MLflow's AI Gateway before the change returns.
        self.llm_changed = llm_changed
        self.db = db
        self.supervisor = supervisor
        self.routes = routes
        self.workload_sizes = workload_sizes
        self.start_timeout = start_timeout
        self.worker_env = worker_env
        self.model_policy = model_policy
        self._watchers: dict[str, asyncio.Task] = {}

    def spec_for(self, endpoint: Endpoint, entity: ServedEntity, policy: ModelPolicy) -> WorkerSpec:
        return WorkerSpec(
            key=worker_key(endpoint.name, entity.name),
            model_uri=f"models:/{entity.entity_name}/{entity.entity_version}",
            replicas=self.workload_sizes.get(entity.workload_size, 1),
            env=tuple(sorted(self.worker_env(endpoint, entity, policy).items())),
            scale_to_zero=entity.scale_to_zero,
            env_manager=entity.env_manager,
        )

    def _load(self, name: str) -> Endpoint | None:
        with self.db.session() as session:
            return session.scalar(select(Endpoint).where(Endpoint.name == name))

    async def restore(self) -> None:
        """Bring back every endpoint after a restart; their workers load in parallel."""
        with self.db.session() as session:
            names = list(session.scalars(select(Endpoint.name)))
        for name in names:
            await self.apply(name)
        log.info("restored %d endpoint(s)", len(names))

    async def apply(self, name: str) -> None:
        endpoint = await asyncio.to_thread(self._load, name)
        wanted: set[str] = set()
        if endpoint is None:
            was_llm = (old := self.routes.get(name)) is not None and old.llm is not None
            self.routes.remove(name)
            if was_llm and self.llm_changed is not None:
                await self.llm_changed(name, False)
        elif endpoint.task is not None:
            # An LLM endpoint has no workers: the gateway answers it with MLflow's AI Gateway.
            self.routes.set(self._llm_routes_of(endpoint))
            if self.llm_changed is not None:
                await self.llm_changed(name, True)
        else:
            policies, system_tokens = {}, {}
            for entity in endpoint.entities:
                policies[entity.name] = await asyncio.to_thread(self.model_policy, entity.entity_name, entity.entity_version)
                spec = self.spec_for(endpoint, entity, policies[entity.name])
                if token := dict(spec.env).get("DATABRICKS_TOKEN"):
                    system_tokens[spec.key] = token
                wanted.add(spec.key)
                self.supervisor.ensure(spec)
            self.routes.set(self._routes_of(endpoint, policies, system_tokens))
            if endpoint.pending_routes is not None and name not in self._watchers:
                self._watchers[name] = asyncio.create_task(self._watch_pending(name), name=f"watch-pending-{name}")
        stale = [k for k in self.supervisor.versions if k.startswith(f"{name}/") and k not in wanted]
        await asyncio.gather(*(self.supervisor.stop(k) for k in stale))

    @staticmethod
    def _llm_routes_of(endpoint: Endpoint) -> EndpointRoutes:
        return EndpointRoutes(
            name=endpoint.name, entities={}, routes=(), experiment_id=endpoint.experiment_id,
            llm=LlmRoute(task=endpoint.task, models={e.name: e.entity_name for e in endpoint.entities}),
            limits=_limits_of(endpoint),
        )

    @staticmethod
    def _routes_of(endpoint: Endpoint, policies: dict[str, ModelPolicy], system_tokens: dict[str, str]) -> EndpointRoutes:
        active = [e for e in endpoint.entities if not e.pending]
        return EndpointRoutes(
            name=endpoint.name,
            entities={e.name: worker_key(endpoint.name, e.name) for e in active},
            routes=tuple(
                (worker_key(endpoint.name, r["served_model_name"]), r["traffic_percentage"])
                for r in endpoint.routes
                if r["traffic_percentage"] > 0
            ),
            experiment_id=endpoint.experiment_id,
            models={worker_key(endpoint.name, e.name): (e.entity_name, e.entity_version) for e in endpoint.entities},
            user_scopes={worker_key(endpoint.name, name): policy.api_scopes
                         for name, policy in policies.items() if policy.api_scopes is not None},
            system_tokens=system_tokens,
            updating=endpoint.pending_routes is not None,
            update_failed=endpoint.update_state == "UPDATE_FAILED",
            limits=_limits_of(endpoint),
        )

    async def _watch_pending(self, name: str) -> None:
        try:
            endpoint = await asyncio.to_thread(self._load, name)
            if endpoint is None or endpoint.pending_routes is None:
                return
            keys = [worker_key(name, e.name) for e in endpoint.entities if e.pending]
            results = await asyncio.gather(
                *(self.supervisor.wait_ready(k, self.start_timeout) for k in keys), return_exceptions=True
            )
            errors = [r for r in results if isinstance(r, BaseException)]
            await asyncio.to_thread(self._finish_update, name, errors)
        finally:
            self._watchers.pop(name, None)
        await self.apply(name)

    def _finish_update(self, name: str, errors: list[BaseException]) -> None:
        with self.db.session() as session:
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            if endpoint is None or endpoint.pending_routes is None:
                return
            if errors:
                message = _describe(errors[0], self.start_timeout)
                for entity in [e for e in endpoint.entities if e.pending]:
                    endpoint.entities.remove(entity)
                endpoint.pending_routes = None
                endpoint.update_state = "UPDATE_FAILED"
                endpoint.update_message = message
                log.error("config update of %s failed: %s", name, message.splitlines()[0])
                return
            keep = {r["served_model_name"] for r in endpoint.pending_routes}
            for entity in list(endpoint.entities):
                if entity.name in keep:
                    entity.pending = False
                else:
                    endpoint.entities.remove(entity)
            endpoint.routes = endpoint.pending_routes
            endpoint.pending_routes = None
            endpoint.config_version += 1
            endpoint.update_state = "NOT_UPDATING"
            endpoint.update_message = None
            log.info("endpoint %s now at config version %d", name, endpoint.config_version)


def _limits_of(endpoint: Endpoint) -> tuple:
    """The endpoint's rate limits. Settings were validated when stored; should a later version
    refuse them, the endpoint still serves (without limits, said loudly) rather than not at all."""
    try:
        return settings_from_stored(endpoint.ai_gateway, llm=endpoint.task is not None).rate_limits
    except AgentwharfError as error:
        log.error("endpoint %s: its AI gateway settings are not valid any more (%s); serving it without rate limits",
                  endpoint.name, error.message)
        return ()


def _describe(error: BaseException, timeout: float) -> str:
    if isinstance(error, DeploymentFailed):
        return error.message
    if isinstance(error, asyncio.TimeoutError):
        return f"The model worker did not become ready within {timeout:.0f}s"
    return f"{type(error).__name__}: {error}"
