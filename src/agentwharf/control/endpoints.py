"""Serving endpoints: create, update config, delete, read. Every change is validated in full
(including registry look-ups) before the database is touched, so a bad request changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select

from agentwharf import names
from agentwharf.control.config import ConfigSpec, EntitySpec, parse_config
from agentwharf.control.reconciler import Reconciler
from agentwharf.control.registry import MlflowRegistry
from agentwharf.errors import AlreadyExists, AgentwharfError, InvalidParameter, NotFound
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint, ServedEntity


def _conflict(name: str) -> AgentwharfError:
    return AgentwharfError(
        f"Endpoint {name!r} is already being updated; wait for the update to finish before changing it again",
        "RESOURCE_CONFLICT",
    )


def _entity_row(spec: EntitySpec, pending: bool) -> ServedEntity:
    return ServedEntity(
        name=spec.name,
        entity_name=spec.entity_name,
        entity_version=spec.entity_version,
        environment_vars=spec.environment_vars,
        workload_size=spec.workload_size,
        scale_to_zero=spec.scale_to_zero,
        pending=pending,
    )


def _as_spec(row: ServedEntity) -> EntitySpec:
    return EntitySpec(row.name, row.entity_name, row.entity_version, row.environment_vars, row.workload_size, row.scale_to_zero)


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
    def __init__(self, db: Database, registry: MlflowRegistry, reconciler: Reconciler, workload_sizes: dict[str, int], max_entities: int):
        self.db = db
        self.registry = registry
        self.reconciler = reconciler
        self.workload_sizes = workload_sizes
        self.max_entities = max_entities
        # Serialises changes: two updates of one endpoint must not interleave their reads and
        # writes (the database alone would let both pass the "not updating" check).
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

    def list(self) -> list[Endpoint]:
        with self.db.session() as session:
            return list(session.scalars(select(Endpoint).order_by(Endpoint.name)))

    # -- changes -------------------------------------------------------------------------

    def parse(self, config: Any) -> ConfigSpec:
        return parse_config(config, self.workload_sizes, self.max_entities)

    async def _check_models(self, entities: list[EntitySpec]) -> None:
        for entity in entities:
            await asyncio.to_thread(self.registry.check_model_version, entity.entity_name, entity.entity_version)

    async def create(self, name: Any, config: Any, *, tags: Any = None, description: str | None = None, creator: str | None = None) -> Endpoint:
        names.check_endpoint_name(name)
        spec = self.parse(config)
        tag_map = parse_tags(tags)
        async with self._lock:
            if self.find(name) is not None:
                raise AlreadyExists(f"Endpoint {name!r} already exists")
            await self._check_models(list(spec.entities))
            experiment_id = await asyncio.to_thread(self.registry.endpoint_experiment, name)
            await asyncio.to_thread(self._insert, name, spec, tag_map, description, creator, experiment_id)
        await self.reconciler.apply(name)
        return self.get(name)

    def _insert(self, name, spec: ConfigSpec, tags, description, creator, experiment_id) -> None:
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
                entities=[_entity_row(e, pending=True) for e in spec.entities],
            ))

    async def update_config(self, name: str, config: Any, *, add_tags: dict[str, str] | None = None) -> Endpoint:
        spec = self.parse(config)
        async with self._lock:
            current = self.get(name)
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
            await self._check_models(new)
            await asyncio.to_thread(self._write_update, name, spec, new, add_tags or {})
        await self.reconciler.apply(name)
        return self.get(name)

    def _write_update(self, name: str, spec: ConfigSpec, new: list[EntitySpec], add_tags: dict[str, str]) -> None:
        with self.db.session() as session:
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

    async def delete(self, name: str) -> None:
        async with self._lock:
            await asyncio.to_thread(self._delete_row, name)
        await self.reconciler.apply(name)

    def _delete_row(self, name: str) -> None:
        with self.db.session() as session:
            endpoint = session.scalar(select(Endpoint).where(Endpoint.name == name))
            if endpoint is None:
                raise NotFound(f"Endpoint {name!r} does not exist")
            session.delete(endpoint)
