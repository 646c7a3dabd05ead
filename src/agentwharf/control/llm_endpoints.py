"""The MLflow AI Gateway side of an LLM endpoint's life: made on create, changed with its config
or AI gateway settings, removed on delete. Every step that fails undoes what it made, so a
refused change leaves MLflow's gateway as it was (see ``llm.mlflow_admin`` for the mapping).

These calls block (MLflow's REST over loopback); the endpoint service runs them in threads.
"""

from __future__ import annotations

import logging
import secrets

from agentwharf.errors import InvalidParameter
from agentwharf.llm import spec as llm_spec
from agentwharf.llm.ai_gateway import AiGatewaySpec
from agentwharf.llm.mlflow_admin import EntityObjects, GatewayAdmin
from agentwharf.llm.spec import ExternalModelSpec

log = logging.getLogger("agentwharf.control.llm")

#: served entity name -> (its spec as stored, MLflow's objects behind it)
Stored = dict[str, tuple[ExternalModelSpec, EntityObjects]]


def stored_entities(entities) -> Stored:
    """The external models of an endpoint's rows (``ServedEntity``)."""
    found = {}
    for row in entities:
        if row.external_model:
            found[row.name] = (llm_spec.from_stored(row.name, row.external_model),
                               EntityObjects.from_json(row.external_model["mlflow"]))
    return found


def check_keys(entities: tuple[ExternalModelSpec, ...], existing: Stored) -> None:
    """OpenAI itself always wants a key: a new entity (or one whose provider settings change)
    must bring one, as a reference or in plain text."""
    for entity in entities:
        kept = entity.name in existing and existing[entity.name][0].same_provider_settings(entity)
        if entity.provider == "openai" and entity.key is None and entity.key_reference is None and not kept:
            raise InvalidParameter(f"served entity {entity.name!r}: openai_config.openai_api_key (a secret reference) or "
                                   "openai_api_key_plaintext is required for provider 'openai'")


class LlmEndpoints:
    def __init__(self, admin: GatewayAdmin):
        self.admin = admin

    def _linkages(self, routes: tuple[tuple[str, int], ...], objects: dict[str, EntityObjects], settings: AiGatewaySpec) -> dict:
        return self.admin.model_configs(list(routes), [name for name, _ in routes], objects, bool(settings.fallback))

    def create(self, name: str, entities: tuple[ExternalModelSpec, ...], routes: tuple[tuple[str, int], ...],
               settings: AiGatewaySpec, experiment_id: str) -> tuple[str, dict[str, EntityObjects]]:
        """MLflow's objects for a new LLM endpoint. Returns the gateway endpoint's id and each
        entity's objects."""
        made: dict[str, EntityObjects] = {}
        try:
            for entity in entities:
                made[entity.name] = self.admin.make_entity(name, entity, entity.key)
            gateway_id = self.admin.create_endpoint(name, self._linkages(routes, made, settings), experiment_id,
                                                    settings.usage_tracking is not False)
        except Exception:
            for objects in made.values():
                self.admin.drop_entity(objects)
            raise
        return gateway_id, made

    def reconfigure(self, name: str, gateway_id: str, existing: Stored, entities: tuple[ExternalModelSpec, ...],
                    routes: tuple[tuple[str, int], ...], settings: AiGatewaySpec) -> dict[str, EntityObjects]:
        """Point the endpoint at a new config: entities whose provider settings are unchanged
        (and that bring no new key) keep their objects; the rest get new ones, and objects no
        longer used are removed once MLflow's endpoint no longer uses them."""
        kept = {e.name: existing[e.name][1] for e in entities
                if e.name in existing and e.key is None and existing[e.name][0].same_provider_settings(e)}
        made: dict[str, EntityObjects] = {}
        try:
            for entity in entities:
                if entity.name not in kept:
                    # New MLflow objects under a fresh name, so the old ones keep serving until
                    # the endpoint is switched over to these.
                    made[entity.name] = self.admin.make_entity(name, entity, entity.key, suffix=f"@{secrets.token_hex(3)}")
            objects = {**kept, **made}
            self.admin.update_endpoint(gateway_id, self._linkages(routes, objects, settings), settings.usage_tracking is not False)
        except Exception:
            for created in made.values():
                self.admin.drop_entity(created)
            raise
        for entity_name, (_spec, old) in existing.items():
            if entity_name not in kept:
                self.admin.drop_entity(old)
        return objects

    def apply_settings(self, gateway_id: str, existing: Stored, routes: tuple[tuple[str, int], ...],
                       settings: AiGatewaySpec) -> None:
        """New AI gateway settings (fallbacks, usage tracking) on an unchanged config."""
        objects = {name: objs for name, (_spec, objs) in existing.items()}
        self.admin.update_endpoint(gateway_id, self._linkages(routes, objects, settings), settings.usage_tracking is not False)

    def remove(self, gateway_id: str | None, existing: Stored) -> None:
        if gateway_id:
            self.admin.delete_endpoint(gateway_id)
        for _spec, objects in existing.values():
            self.admin.drop_entity(objects)

