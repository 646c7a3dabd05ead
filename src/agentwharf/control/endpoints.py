"""Serving endpoints: create, update config, delete, read. Every change is validated in full
(including registry look-ups) before the database is touched, so a bad request changes nothing.

An LLM endpoint (external models) has its MLflow AI Gateway objects made before its row is
written and removed if the write fails (``control.llm_endpoints``); it has no workers, so its
config applies at once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select, update

from agentwharf import names
from agentwharf.control.config import ConfigSpec, EntitySpec, parse_config
from agentwharf.control.llm_endpoints import LlmEndpoints, check_keys, stored_entities
from agentwharf.control.reconciler import Reconciler
from agentwharf.auth.caller import Caller
from agentwharf.auth.gatekeeper import Gatekeeper
from agentwharf.auth.identities import IdentityService
from agentwharf.auth.levels import PermissionLevel, model_permission_at_least
from agentwharf.control.registry import MlflowRegistry
from agentwharf.errors import AlreadyExists, Conflict, InvalidParameter, NotFound, PermissionDenied
from agentwharf.llm import spec as llm_spec
from agentwharf.llm.ai_gateway import AiGatewaySpec, parse_ai_gateway
from agentwharf.llm.mlflow_admin import EntityObjects
from agentwharf.llm.spec import ExternalModelSpec
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint, ServedEntity


def _conflict(name: str) -> Conflict:
    return Conflict(f"Endpoint {name!r} is already being updated; wait for the update to finish before changing it again")


def _entity_row(spec: EntitySpec, pending: bool) -> ServedEntity:
    return ServedEntity(
        name=spec.name,
        entity_name=spec.entity_name,
        entity_version=spec.entity_version,
        environment_vars=spec.environment_vars,
        workload_size=spec.workload_size,
        scale_to_zero=spec.scale_to_zero,
        env_manager=spec.env_manager,
        pending=pending,
    )


def _external_row(spec: ExternalModelSpec, objects: EntityObjects) -> ServedEntity:
    return ServedEntity(name=spec.name, entity_name=spec.model, entity_version="", environment_vars={},
                        external_model=llm_spec.to_stored(spec, objects.to_json()), pending=False)


def _kind_of(task: str | None) -> str:
    return f"an LLM endpoint ({task})" if task else "an agent endpoint (registered models)"


def _as_spec(row: ServedEntity) -> EntitySpec:
    return EntitySpec(row.name, row.entity_name, row.entity_version, row.environment_vars, row.workload_size, row.scale_to_zero,
                      row.env_manager)


def parse_tags(raw: Any) -> dict[str, str]:
    """Tags arrive as Databricks' ``[{"key", "value"}]`` list (a plain object is accepted too)."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list) and all(isinstance(t, dict) and "key" in t for t in raw):
        items = [(t["key"], t.get("value", "")) for t in raw]
    else:
        raise InvalidParameter('tags must be a list of {"key": ..., "value": ...} objects')
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in items):
        raise InvalidParameter("tag keys and values must be strings")
    return dict(items)


class EndpointService:
    def __init__(self, db: Database, registry: MlflowRegistry, reconciler: Reconciler, workload_sizes: dict[str, int],
                 max_entities: int, identities: IdentityService | None = None, gatekeeper: Gatekeeper | None = None,
                 llm: LlmEndpoints | None = None):
        """``identities``/``gatekeeper`` None means no permission checks (unit tests only);
        so does ``caller=None`` on a method (the platform acting for itself). ``llm`` makes
        LLM endpoints' objects in MLflow's AI Gateway; None refuses LLM endpoints."""
        self.llm = llm
        self.identities = identities
        self.gatekeeper = gatekeeper
        self.db = db
        self.registry = registry
        self.reconciler = reconciler
        self.workload_sizes = workload_sizes
        self.max_entities = max_entities
        # Serialises this process's changes, so one waits for the other rather than fail. The
        # database is the arbiter between processes: a config update claims the endpoint's
        # config version in its transaction (``_claim``), and the later of two loses.
        self._lock = asyncio.Lock()

    # -- reads ---------------------------------------------------------------------------

    def get(self, name: str) -> Endpoint:
        endpoint = self.find(name)
        if endpoint is None:
            raise NotFound(f"Endpoint {name!r} does not exist")
        return endpoint

    def find(self, name: str) -> Endpoint | None:
        with self.db.session() as session:
            return session.scalar(select(Endpoint).where(Endpoint.name == name))

    def list(self, caller: Caller | None = None) -> list[Endpoint]:
        with self.db.session() as session:
            endpoints = list(session.scalars(select(Endpoint).order_by(Endpoint.name)))
        return [e for e in endpoints if self.may(caller, e.name, PermissionLevel.CAN_VIEW)]

    def may(self, caller: Caller | None, name: str, level: PermissionLevel) -> bool:
        return caller is None or self.gatekeeper is None or self.gatekeeper.endpoint_level(caller, name).allows(level)

    def require(self, caller: Caller | None, name: str, level: PermissionLevel) -> None:
        if caller is not None and self.gatekeeper is not None:
            self.gatekeeper.require_personal(caller, "change serving endpoints")
            self.gatekeeper.require_endpoint(caller, name, level)

    def _check_deployable(self, caller: Caller | None, entities: list[EntitySpec]) -> None:
        """The caller may deploy each model (MLflow USE or more on it), and may query every
        endpoint the model declares (its system credential will be able to). Raises
        PermissionDenied before anything is created."""
        if caller is None or self.identities is None:
            return
        self.gatekeeper.require_personal(caller, "deploy models")
        for entity in entities:
            if not caller.is_admin:
                have = self.identities.model_permission(entity.entity_name, caller.name)
                if not model_permission_at_least(have, "USE"):
                    raise PermissionDenied(f"{caller.name!r} may not deploy registered model {entity.entity_name!r}: "
                                           f"that needs USE on it (has {have or 'no permission'})")
            policy = self.registry.model_policy(entity.entity_name, entity.entity_version)
            for declared in policy.endpoints:
                if not self.gatekeeper.endpoint_level(caller, declared).allows(PermissionLevel.CAN_QUERY):
                    raise PermissionDenied(f"{entity.entity_name} v{entity.entity_version} declares serving endpoint "
                                           f"{declared!r}, which {caller.name!r} may not query")

    # -- changes -------------------------------------------------------------------------

    def parse(self, config: Any) -> ConfigSpec:
        return parse_config(config, self.workload_sizes, self.max_entities)

    async def _check_models(self, entities: list[EntitySpec], caller: Caller | None) -> None:
        for entity in entities:
            await asyncio.to_thread(self.registry.check_model_version, entity.entity_name, entity.entity_version)
        await asyncio.to_thread(self._check_deployable, caller, entities)

    def _llm(self) -> LlmEndpoints:
        if self.llm is None:
            raise InvalidParameter("This platform serves no LLM endpoints (external models)")
        return self.llm

    def settings_of(self, endpoint: Endpoint) -> AiGatewaySpec:
        return parse_ai_gateway(endpoint.ai_gateway, llm=endpoint.task is not None) if endpoint.ai_gateway else AiGatewaySpec()

    async def create(self, name: Any, config: Any, *, tags: Any = None, description: str | None = None,
                     caller: Caller | None = None, ai_gateway: Any = None) -> Endpoint:
        names.check_endpoint_name(name)
        if caller is not None and self.gatekeeper is not None:
            self.gatekeeper.require_personal(caller, "create serving endpoints")
        spec = self.parse(config)
        settings = parse_ai_gateway(ai_gateway, llm=spec.task is not None)
        self._check_principals(settings)
        if spec.task is not None:
            check_keys(spec.entities, {})
        tag_map = parse_tags(tags)
        creator = caller.name if caller is not None else None
        async with self._lock:
            if self.find(name) is not None:
                raise AlreadyExists(f"Endpoint {name!r} already exists")
            if spec.task is None:
                await self._check_models(list(spec.entities), caller)
            experiment_id = await asyncio.to_thread(self.registry.endpoint_experiment, name)
            if spec.task is None:
                await asyncio.to_thread(self._insert, name, spec, tag_map, description, creator, experiment_id,
                                        settings.to_json() or None)
            else:
                await self._create_llm(name, spec, settings, tag_map, description, creator, experiment_id)
            if creator is not None and self.identities is not None:
                # The creator manages what they created (and its traces in MLflow).
                await asyncio.to_thread(self.identities.set_endpoint_level, name, creator, PermissionLevel.CAN_MANAGE, experiment_id)
        await self.reconciler.apply(name)
        return self.get(name)

    def _insert(self, name, spec: ConfigSpec, tags, description, creator, experiment_id, ai_gateway) -> None:
        with self.db.session() as session:
            session.add(Endpoint(
                id=uuid.uuid4().hex,
                name=name,
                creator=creator,
                description=description,
                tags=tags,
                experiment_id=experiment_id,
                routes=[],
                pending_routes=spec.routes_json(),
                update_state="IN_PROGRESS",
                ai_gateway=ai_gateway,
                entities=[_entity_row(e, pending=True) for e in spec.entities],
            ))

    async def _create_llm(self, name: str, spec: ConfigSpec, settings: AiGatewaySpec, tags, description, creator,
                          experiment_id: str) -> None:
        llm = self._llm()
        gateway_id, objects = await asyncio.to_thread(llm.create, name, spec.entities, spec.routes, settings, experiment_id)
        try:
            await asyncio.to_thread(self._insert_llm, name, spec, settings, tags, description, creator, experiment_id,
                                    gateway_id, objects)
        except Exception:
            await asyncio.to_thread(llm.remove, gateway_id, {e.name: (e, objects[e.name]) for e in spec.entities})
            raise

    def _insert_llm(self, name, spec: ConfigSpec, settings: AiGatewaySpec, tags, description, creator, experiment_id,
                    gateway_id: str, objects: dict[str, EntityObjects]) -> None:
        with self.db.session() as session:
            session.add(Endpoint(
                id=uuid.uuid4().hex, name=name, creator=creator, description=description, tags=tags,
                experiment_id=experiment_id, routes=spec.routes_json(), pending_routes=None, config_version=1,
                update_state="NOT_UPDATING", task=spec.task, gateway_endpoint_id=gateway_id,
                ai_gateway=settings.to_json() or None,
                entities=[_external_row(e, objects[e.name]) for e in spec.entities],
            ))

    async def update_config(self, name: str, config: Any, *, add_tags: dict[str, str] | None = None,
                            caller: Caller | None = None) -> Endpoint:
        self.get(name)
        self.require(caller, name, PermissionLevel.CAN_MANAGE)
        spec = self.parse(config)
        async with self._lock:
            current = self.get(name)
            if current.task != spec.task:
                raise InvalidParameter(f"Endpoint {name!r} is {_kind_of(current.task)}; this config is for "
                                       f"{_kind_of(spec.task)}. Create another endpoint for it")
            if spec.task is not None:
                await self._update_llm(current, spec, add_tags or {})
                return self.get(name)
            if current.update_state == "IN_PROGRESS":
                raise _conflict(name)
            existing = {e.name: e for e in current.entities}
            new = []
            for entity in spec.entities:
                old = existing.get(entity.name)
                if old is None:
                    new.append(entity)
                elif not entity.same_serving(_as_spec(old)):
                    raise InvalidParameter(
                        f"Served entity {entity.name!r} already serves {old.entity_name} v{old.entity_version} with other "
                        "settings; serve the change under a new name and move traffic to it"
                    )
            await self._check_models(new, caller)
            await asyncio.to_thread(self._write_update, name, spec, new, add_tags or {}, current.config_version)
        await self.reconciler.apply(name)
        return self.get(name)

    async def _update_llm(self, current: Endpoint, spec: ConfigSpec, add_tags: dict[str, str]) -> None:
        existing = stored_entities(current.entities)
        check_keys(spec.entities, existing)
        objects = await asyncio.to_thread(self._llm().reconfigure, current.name, current.gateway_endpoint_id, existing,
                                          spec.entities, spec.routes, self.settings_of(current))
        await asyncio.to_thread(self._write_llm_update, current.name, spec, objects, add_tags)
        await self.reconciler.apply(current.name)

    def _write_llm_update(self, name: str, spec: ConfigSpec, objects: dict[str, EntityObjects], add_tags: dict[str, str]) -> None:
        with self.db.session() as session:
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            endpoint.tags = {**endpoint.tags, **add_tags}
            for entity in list(endpoint.entities):
                endpoint.entities.remove(entity)
            session.flush()
            for entity in spec.entities:
                endpoint.entities.append(_external_row(entity, objects[entity.name]))
            endpoint.routes = spec.routes_json()
            endpoint.config_version += 1
            endpoint.update_state = "NOT_UPDATING"
            endpoint.update_message = None

    async def put_ai_gateway(self, name: str, raw: Any, caller: Caller | None = None) -> Endpoint:
        """Replace the endpoint's AI gateway settings (Databricks' ``PUT .../ai-gateway``)."""
        current = self.get(name)
        self.require(caller, name, PermissionLevel.CAN_MANAGE)
        if raw is not None and not isinstance(raw, dict):
            raise InvalidParameter("The body must be an object of AI gateway settings")
        settings = parse_ai_gateway(raw or {}, llm=current.task is not None)
        self._check_principals(settings)
        async with self._lock:
            current = self.get(name)
            if current.task is not None:
                routes = tuple((r["served_model_name"], r["traffic_percentage"]) for r in current.routes)
                await asyncio.to_thread(self._llm().apply_settings, current.gateway_endpoint_id,
                                        stored_entities(current.entities), routes, settings)
            await asyncio.to_thread(self._write_settings, name, settings.to_json() or None)
        await self.reconciler.apply(name)
        return self.get(name)

    def _check_principals(self, settings: AiGatewaySpec) -> None:
        if self.identities is None:
            return
        for limit in settings.rate_limits:
            if limit.principal is None:
                continue
            try:
                principal = self.identities.principal(limit.principal)
            except NotFound:
                raise InvalidParameter(f"rate_limits: no user or service principal named {limit.principal!r}") from None
            if principal.kind != limit.key:
                raise InvalidParameter(f"rate_limits: {limit.principal!r} is a {principal.kind}, not a {limit.key}")

    def _write_settings(self, name: str, stored: dict | None) -> None:
        with self.db.session() as session:
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            endpoint.ai_gateway = stored

    @staticmethod
    def _claim(session, name: str, seen_version: int) -> None:
        """Take the endpoint for this update, in the update's transaction: only if its config is
        still the one this update was checked against and no other update is in progress. The
        write comes first, so the transaction holds the row (PostgreSQL) or the database
        (SQLite) from here on.

        Raises:
            Conflict: another update came first.
        """
        claimed = session.execute(update(Endpoint).where(
            Endpoint.name == name, Endpoint.config_version == seen_version, Endpoint.update_state != "IN_PROGRESS",
        ).values(update_state="IN_PROGRESS").execution_options(synchronize_session=False))
        if claimed.rowcount != 1:
            raise Conflict(f"Endpoint {name!r} is being updated, or another update changed it meanwhile; "
                           "read its config again and retry once no update is in progress")

    def _write_update(self, name: str, spec: ConfigSpec, new: list[EntitySpec], add_tags: dict[str, str],
                      seen_version: int) -> None:
        with self.db.session() as session:
            self._claim(session, name, seen_version)
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            endpoint.tags = {**endpoint.tags, **add_tags}
            for entity in new:
                endpoint.entities.append(_entity_row(entity, pending=True))
            if new:
                endpoint.pending_routes = spec.routes_json()
                endpoint.update_state = "IN_PROGRESS"
                endpoint.update_message = None
                return
            # Only traffic (or removals) changed: every version already answers, apply now.
            keep = {e.name for e in spec.entities}
            for entity in [e for e in endpoint.entities if e.name not in keep]:
                endpoint.entities.remove(entity)
            endpoint.routes = spec.routes_json()
            endpoint.config_version += 1
            endpoint.update_state = "NOT_UPDATING"
            endpoint.update_message = None

    async def update_metadata(self, name: str, *, add_tags: dict[str, str] | None = None,
                              delete_tags: list[str] | None = None, description: str | None = None,
                              caller: Caller | None = None) -> Endpoint:
        """Change tags and description (no new config). Deletes apply before additions, so one
        request may replace a tag's value by deleting and adding its key."""
        self.get(name)
        self.require(caller, name, PermissionLevel.CAN_MANAGE)
        if delete_tags is not None and not all(isinstance(k, str) for k in delete_tags):
            raise InvalidParameter("delete_tags must be a list of tag keys")
        if description is not None and not isinstance(description, str):
            raise InvalidParameter("description must be a string")
        async with self._lock:
            await asyncio.to_thread(self._write_metadata, name, add_tags or {}, delete_tags or [], description)
        return self.get(name)

    def _write_metadata(self, name: str, add_tags: dict[str, str], delete_tags: list[str], description: str | None) -> None:
        with self.db.session() as session:
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            tags = {k: v for k, v in endpoint.tags.items() if k not in set(delete_tags)}
            endpoint.tags = {**tags, **add_tags}
            if description is not None:
                endpoint.description = description

    async def delete(self, name: str, caller: Caller | None = None) -> None:
        self.get(name)
        self.require(caller, name, PermissionLevel.CAN_MANAGE)
        async with self._lock:
            current = self.get(name)
            if current.task is not None:
                await asyncio.to_thread(self._llm().remove, current.gateway_endpoint_id, stored_entities(current.entities))
            await asyncio.to_thread(self._delete_row, name)
            if self.identities is not None:
                await asyncio.to_thread(self.identities.drop_endpoint_grants, name)
        await self.reconciler.apply(name)

    def _delete_row(self, name: str) -> None:
        with self.db.session() as session:
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            if endpoint is None:
                raise NotFound(f"Endpoint {name!r} does not exist")
            session.delete(endpoint)
