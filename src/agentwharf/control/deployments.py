"""Agent deployments, the `agents` API's view: one registered model version served on an
endpoint. Nothing is stored here; a deployment is read off the endpoints' served entities."""

from __future__ import annotations

from typing import Any

from agentwharf import names
from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control.endpoints import EndpointService, parse_tags
from agentwharf.control.views import entity_config
from agentwharf.errors import AlreadyExists, InvalidParameter, NotFound, ResourceLimitExceeded
from agentwharf.rollouts import parse_rollout
from agentwharf.store.models import Endpoint, ServedEntity


def check_uc_name(model_name: Any) -> str:
    if not isinstance(model_name, str) or len(model_name.split(".")) != 3 or not all(model_name.split(".")):
        raise InvalidParameter(f"model_name must be a three-level name catalog.schema.model, got {model_name!r}")
    return model_name


class DeploymentService:
    def __init__(self, endpoints: EndpointService, rollouts=None):
        self.endpoints = endpoints
        #: RolloutService: deploys with a rollout, and keeps plain deploys off an endpoint with
        #: one in progress (None: rollouts refused, as in unit tests).
        self.rollouts = rollouts

    def find(self, model_name: str, model_version: str | None = None) -> list[tuple[Endpoint, ServedEntity]]:
        found = []
        for endpoint in self.endpoints.list():
            for entity in endpoint.entities:
                if entity.external_model:
                    continue  # an LLM endpoint's external model is no agent deployment
                if entity.entity_name == model_name and model_version in (None, entity.entity_version):
                    found.append((endpoint, entity))
        return found

    def visible(self, pairs, caller: Caller | None) -> list[tuple[Endpoint, ServedEntity]]:
        return [(ep, e) for ep, e in pairs if self.endpoints.may(caller, ep.name, PermissionLevel.CAN_VIEW)]

    def all(self) -> list[tuple[Endpoint, ServedEntity]]:
        return [(ep, e) for ep in self.endpoints.list() for e in ep.entities if not e.external_model]

    async def deploy(
        self,
        model_name: Any,
        model_version: Any,
        *,
        scale_to_zero: bool = False,
        environment_vars: Any = None,
        tags: Any = None,
        workload_size: Any = "Small",
        endpoint_name: Any = None,
        env_manager: Any = None,
        description: Any = None,
        rollout: Any = None,
        caller: Caller | None = None,
    ) -> tuple[Endpoint, str]:
        """Serve a model version: a new endpoint at 100%, or added at 100% to the existing one
        with the versions already there kept at 0%; with a ``rollout``, added at its canary
        share beside the version that has the traffic, to earn the rest (see ``rollouts``).
        Returns the endpoint and the entity name."""
        check_uc_name(model_name)
        plan = None if rollout is None else self._rollout_plan(rollout)
        version = names.check_model_version(model_version)
        endpoint_name = names.check_endpoint_name(endpoint_name or names.default_endpoint_name(model_name))
        entity = {
            "entity_name": model_name,
            "entity_version": version,
            "environment_vars": names.check_environment_vars(environment_vars),
            "workload_size": workload_size or "Small",
            "scale_to_zero_enabled": scale_to_zero,
            "env_manager": env_manager,
        }
        entity_name = names.served_entity_name(model_name, version)
        current = self.endpoints.find(endpoint_name)
        compared_with = None
        if self.rollouts is not None:
            if plan is not None:
                compared_with = self.rollouts.check_can_start(current, endpoint_name)
            elif current is not None:
                self.rollouts.refuse_if_running(endpoint_name)
        if current is None:
            config = {"served_entities": [entity], "traffic_config": {"routes": [{"served_model_name": entity_name, "traffic_percentage": 100}]}}
            return await self.endpoints.create(endpoint_name, config, tags=tags, description=description,
                                               caller=caller), entity_name
        if any(e.entity_name == model_name and e.entity_version == version for e in current.entities):
            raise AlreadyExists(f"Version {version} of {model_name} is already served by endpoint {endpoint_name!r}")
        served = [entity_config(e) for e in current.entities if not e.pending]
        if len(served) + 1 > self.endpoints.max_entities:
            raise ResourceLimitExceeded(
                f"Endpoint {endpoint_name!r} already serves {len(served)} versions, the most allowed is "
                f"{self.endpoints.max_entities}; delete an old deployment first"
            )
        if plan is not None:
            routes = self.rollouts.canary_routes(current, entity_name, compared_with, plan.stages[0])
        else:
            routes = [{"served_model_name": e["name"], "traffic_percentage": 0} for e in served]
            routes.append({"served_model_name": entity_name, "traffic_percentage": 100})
        config = {"served_entities": [*served, entity], "traffic_config": {"routes": routes}}
        endpoint = await self.endpoints.update_config(endpoint_name, config, add_tags=parse_tags(tags), caller=caller)
        if plan is not None:
            self.rollouts.record(endpoint_name, entity_name, compared_with, plan, caller)
        if description is not None:
            endpoint = await self.endpoints.update_metadata(endpoint_name, description=description, caller=caller)
        return endpoint, entity_name

    def _rollout_plan(self, raw: Any):
        if self.rollouts is None:
            raise InvalidParameter("rollouts are not available on this platform")
        return parse_rollout(raw)

    async def delete(self, model_name: str, model_version: Any = None, caller: Caller | None = None) -> int:
        """Stop serving one version (or every version) of a model. Returns how many were removed.

        Deleting one version gives 100% of the traffic to the highest version left; deleting
        the last one deletes the endpoint.
        """
        version = None if model_version is None else names.check_model_version(model_version)
        matches = self.find(model_name, version)
        if not matches:
            what = f"version {version} of {model_name}" if version else model_name
            raise NotFound(f"No deployment of {what} exists")
        by_endpoint: dict[str, list[str]] = {}
        for endpoint, entity in matches:
            by_endpoint.setdefault(endpoint.name, []).append(entity.name)
        for endpoint_name in by_endpoint:  # every check before the first change
            self.endpoints.require(caller, endpoint_name, PermissionLevel.CAN_MANAGE)
        for endpoint_name, removed in by_endpoint.items():
            endpoint = self.endpoints.get(endpoint_name)
            left = [e for e in endpoint.entities if e.name not in removed and not e.pending]
            if not left:
                await self.endpoints.delete(endpoint_name, caller)
                continue
            top = max(left, key=lambda e: (e.entity_name == model_name, int(e.entity_version)))
            config = {
                "served_entities": [entity_config(e) for e in left],
                "traffic_config": {"routes": [
                    {"served_model_name": e.name, "traffic_percentage": 100 if e is top else 0} for e in left
                ]},
            }
            await self.endpoints.update_config(endpoint_name, config, caller=caller)
        return len(matches)
