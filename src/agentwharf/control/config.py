"""Validation of an endpoint config in the Databricks shape, before anything changes.

A config is ``served_entities`` (``entity_name``, ``entity_version``, ``environment_vars``,
``workload_size``, ``scale_to_zero_enabled``, optional ``name`` and agentwharf's ``env_manager``) and ``traffic_config.routes``
(``served_model_name``, ``traffic_percentage``). Unknown fields are ignored: Databricks' clients
echo output-only fields such as ``state`` back in ``PUT .../config``.

A served entity with ``external_model`` (see ``llm.spec``) makes the endpoint an LLM endpoint;
one endpoint serves registered models or external models (all of one task), never both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentwharf import names
from agentwharf.errors import InvalidParameter, NotImplementedByPlatform, ResourceLimitExceeded
from agentwharf.llm.spec import ExternalModelSpec, parse_external_model
from agentwharf.serving.environments import MANAGERS


@dataclass(frozen=True)
class EntitySpec:
    name: str
    entity_name: str
    entity_version: str
    environment_vars: dict[str, str]
    workload_size: str
    scale_to_zero: bool
    #: ``uv``, ``local`` or None (the platform's default); see ``serving.environments``.
    env_manager: str | None = None

    def same_serving(self, other: EntitySpec) -> bool:
        return self._serving() == other._serving()

    def _serving(self) -> tuple:
        return (self.entity_name, self.entity_version, self.environment_vars, self.workload_size, self.scale_to_zero,
                self.env_manager)


@dataclass(frozen=True)
class ConfigSpec:
    entities: tuple[EntitySpec | ExternalModelSpec, ...]
    routes: tuple[tuple[str, int], ...]

    @property
    def task(self) -> str | None:
        """The LLM task of an endpoint of external models; None for one of registered models."""
        first = self.entities[0]
        return first.task if isinstance(first, ExternalModelSpec) else None

    def routes_json(self) -> list[dict[str, Any]]:
        return [{"served_model_name": n, "traffic_percentage": p} for n, p in self.routes]


def parse_entity(raw: Any, index: int, workload_sizes: dict[str, int]) -> EntitySpec | ExternalModelSpec:
    where = f"served_entities[{index}]"
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where} must be an object")
    if raw.get("external_model") is not None:
        return parse_external_model(raw, where)
    entity_name = raw.get("entity_name") or raw.get("model_name")
    if raw.get("foundation_model"):
        # Checked first: such an entity has no entity_name, and is refused by what it is.
        raise NotImplementedByPlatform(f"{where}: foundation_model entities (Databricks' hosted models) are not served by "
                                       "agentwharf; serve your model server as an external_model LLM endpoint")
    if not isinstance(entity_name, str) or not entity_name:
        raise InvalidParameter(f"{where}.entity_name is required: the registered model's name")
    if entity_name.startswith("apps/"):
        raise NotImplementedByPlatform(f"{where}: only registered MLflow models can be served here (entity_name={entity_name!r})")
    version_raw = raw.get("entity_version", raw.get("model_version"))
    if version_raw is None:
        raise InvalidParameter(f"{where}.entity_version is required")
    try:
        version = names.check_model_version(version_raw)
    except InvalidParameter as error:
        raise InvalidParameter(f"{where}.entity_version: {error.message}") from None
    try:
        env = names.check_environment_vars(raw.get("environment_vars"))
    except InvalidParameter as error:
        raise InvalidParameter(f"{where}.{error.message}") from None
    size = raw.get("workload_size") or "Small"
    if not isinstance(size, str) or size not in workload_sizes:
        raise InvalidParameter(f"{where}.workload_size must be one of {sorted(workload_sizes)}, got {size!r}")
    scale = raw.get("scale_to_zero_enabled", False)
    if not isinstance(scale, bool):
        raise InvalidParameter(f"{where}.scale_to_zero_enabled must be true or false")
    name = raw.get("name") or names.served_entity_name(entity_name, version)
    if not isinstance(name, str) or len(name) > 256:
        raise InvalidParameter(f"{where}.name must be a string of at most 256 characters")
    manager = raw.get("env_manager")
    if manager is not None and manager not in MANAGERS:
        raise InvalidParameter(f"{where}.env_manager must be one of {list(MANAGERS)}, got {manager!r}")
    return EntitySpec(name, entity_name, version, env, size, scale, manager)


def parse_routes(raw: Any, entity_names: list[str]) -> tuple[tuple[str, int], ...]:
    if raw is None:
        if len(entity_names) == 1:
            return ((entity_names[0], 100),)
        raise InvalidParameter("traffic_config.routes is required when an endpoint serves several entities")
    routes_raw = raw.get("routes") if isinstance(raw, dict) else None
    if not isinstance(routes_raw, list) or not routes_raw:
        raise InvalidParameter("traffic_config.routes must be a non-empty list")
    routes, seen = [], set()
    for i, route in enumerate(routes_raw):
        if not isinstance(route, dict):
            raise InvalidParameter(f"traffic_config.routes[{i}] must be an object")
        target = route.get("served_model_name") or route.get("served_entity_name")
        if target not in entity_names:
            raise InvalidParameter(f"traffic_config.routes[{i}].served_model_name {target!r} is not a served entity of this config ({entity_names})")
        if target in seen:
            raise InvalidParameter(f"traffic_config.routes[{i}]: {target!r} appears twice")
        seen.add(target)
        pct = route.get("traffic_percentage")
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise InvalidParameter(f"traffic_config.routes[{i}].traffic_percentage must be an integer from 0 to 100, got {pct!r}")
        routes.append((target, pct))
    total = sum(p for _n, p in routes)
    if total != 100:
        raise InvalidParameter(f"traffic_config.routes traffic_percentage must sum to 100, got {total}")
    return tuple(routes)


def parse_config(raw: Any, workload_sizes: dict[str, int], max_entities: int) -> ConfigSpec:
    if not isinstance(raw, dict):
        raise InvalidParameter("config must be an object with served_entities and traffic_config")
    entities_raw = raw.get("served_entities", raw.get("served_models"))
    if not isinstance(entities_raw, list) or not entities_raw:
        raise InvalidParameter("config.served_entities must be a non-empty list")
    if len(entities_raw) > max_entities:
        raise ResourceLimitExceeded(f"An endpoint serves at most {max_entities} entities; this config has {len(entities_raw)}")
    entities = [parse_entity(e, i, workload_sizes) for i, e in enumerate(entities_raw)]
    entity_names = [e.name for e in entities]
    if len(set(entity_names)) != len(entity_names):
        raise InvalidParameter(f"served entity names must be unique, got {entity_names}")
    external = [e for e in entities if isinstance(e, ExternalModelSpec)]
    if external and len(external) != len(entities):
        raise InvalidParameter("an endpoint serves either registered models or external models (an LLM endpoint), not both")
    if len({e.task for e in external}) > 1:
        raise InvalidParameter(f"the external models of one endpoint must share a task, got {sorted({e.task for e in external})}")
    if not external:
        versions = [(e.entity_name, e.entity_version) for e in entities]
        if len(set(versions)) != len(versions):
            raise InvalidParameter("the same model version is listed twice in served_entities")
    return ConfigSpec(tuple(entities), parse_routes(raw.get("traffic_config"), entity_names))
