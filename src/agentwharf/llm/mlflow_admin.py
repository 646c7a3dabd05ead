"""The MLflow AI Gateway objects behind an LLM endpoint, made through MLflow's own REST API.

One LLM endpoint is one MLflow gateway endpoint of the same name (so MLflow's UI, AI Gateway
page and Playground show it). Each served entity is one MLflow model definition (provider and
model) using one secret: a key given in plain text becomes a secret of the platform's own,
``agentwharf/<endpoint>/<entity>``, encrypted by MLflow's server under the home's key and
deleted with the entity; a referenced secret is the user's and is never touched. The traffic
split becomes MLflow's request-based traffic split; ``fallback_config`` adds the entities as
MLflow fallbacks in the order listed.

Calls go to the platform's MLflow server as its admin and block (callers use threads). A key
is sent exactly once, in the body of ``secrets/create`` (or ``secrets/update``), over loopback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from agentwharf.errors import AlreadyExists, InvalidParameter, MlflowUnavailable, NotFound
from agentwharf.llm.spec import ExternalModelSpec

log = logging.getLogger("agentwharf.llm.admin")

API = "/api/3.0/mlflow/gateway"
SECRET_PREFIX = "agentwharf/"


@dataclass(frozen=True)
class EntityObjects:
    """MLflow's ids of one served entity."""

    model_definition_id: str
    secret_id: str | None
    #: The platform made the secret (from a plaintext key) and deletes it with the entity.
    owns_secret: bool

    def to_json(self) -> dict[str, Any]:
        return {"model_definition_id": self.model_definition_id, "secret_id": self.secret_id,
                "owns_secret": self.owns_secret}

    @classmethod
    def from_json(cls, data: dict) -> EntityObjects:
        return cls(data["model_definition_id"], data.get("secret_id"), bool(data.get("owns_secret")))


def _error(response: httpx.Response, what: str) -> Exception:
    try:
        body = response.json()
    except ValueError:
        body = {}
    code, message = body.get("error_code", ""), body.get("message", response.text[:300])
    if code == "RESOURCE_ALREADY_EXISTS":
        return AlreadyExists(f"MLflow's AI Gateway: {message}")
    if code == "RESOURCE_DOES_NOT_EXIST" or response.status_code == 404:
        return NotFound(f"MLflow's AI Gateway: {message}")
    if response.status_code < 500 and code:
        return InvalidParameter(f"MLflow's AI Gateway refused to {what}: {message}")
    return MlflowUnavailable(f"MLflow's AI Gateway failed to {what} ({response.status_code}): {message}")


class GatewayAdmin:
    def __init__(self, client: httpx.Client):
        #: The platform's client to its MLflow server (``MlflowRegistry.client``), as its admin.
        self.client = client

    def _call(self, method: str, path: str, what: str, **kwargs) -> dict:
        try:
            response = self.client.request(method, f"{API}/{path}", **kwargs)
        except httpx.HTTPError as error:
            raise MlflowUnavailable(f"MLflow server unreachable: {error}") from None
        if response.status_code >= 400:
            raise _error(response, what)
        return response.json() if response.content else {}

    # -- secrets -------------------------------------------------------------------------

    def secret_by_name(self, name: str) -> dict | None:
        secrets = self._call("GET", "secrets/list", "list secrets").get("secrets", [])
        return next((s for s in secrets if s.get("secret_name") == name), None)

    def _auth_config(self, spec: ExternalModelSpec) -> dict[str, str]:
        config = {}
        if spec.api_base:
            config["api_base"] = spec.api_base
        if spec.organization:
            config["organization"] = spec.organization
        return config

    def put_secret(self, name: str, spec: ExternalModelSpec, key: str) -> str:
        """Store ``key`` (with the provider's base URL) as the platform's own secret ``name``;
        one left behind by an interrupted change is replaced. Returns its id."""
        body = {"secret_name": name, "secret_value": {"api_key": key}, "provider": "openai",
                "auth_config": self._auth_config(spec), "created_by": "agentwharf"}
        try:
            return self._call("POST", "secrets/create", "store the key", json=body)["secret"]["secret_id"]
        except AlreadyExists:
            stale = self.secret_by_name(name)
            if stale is None:
                raise
            self.delete_secret(stale["secret_id"])
            return self._call("POST", "secrets/create", "store the key", json=body)["secret"]["secret_id"]

    def referenced_secret(self, spec: ExternalModelSpec) -> str:
        """The id of the user's secret a spec names, checked against the spec's base URL
        (MLflow keeps the base URL with the key)."""
        found = self.secret_by_name(spec.key_reference)
        if found is None:
            raise InvalidParameter(f"No secret named {spec.key_reference!r} in MLflow's AI Gateway: create it there "
                                   "(MLflow UI, AI Gateway > API keys) or give the key with openai_api_key_plaintext")
        stored_base = (found.get("auth_config") or {}).get("api_base")
        if spec.api_base and (stored_base or "").rstrip("/") != spec.api_base:
            raise InvalidParameter(f"Secret {spec.key_reference!r} is for base URL {stored_base or 'the provider default'!r}, "
                                   f"not {spec.api_base!r}: MLflow keeps the base URL with the key. Use a secret made for "
                                   "this URL, or give the key with openai_api_key_plaintext")
        return found["secret_id"]

    def delete_secret(self, secret_id: str) -> None:
        try:
            self._call("DELETE", "secrets/delete", "delete a secret", json={"secret_id": secret_id})
        except NotFound:
            pass

    # -- model definitions ---------------------------------------------------------------

    def put_model_definition(self, name: str, spec: ExternalModelSpec, secret_id: str | None) -> str:
        body = {"name": name, "provider": "openai", "model_name": spec.model, "created_by": "agentwharf"}
        if secret_id is not None:
            body["secret_id"] = secret_id
        try:
            return self._call("POST", "model-definitions/create", "define the model", json=body)["model_definition"]["model_definition_id"]
        except AlreadyExists:
            listed = self._call("GET", "model-definitions/list", "list models").get("model_definitions", [])
            stale = next((m for m in listed if m.get("name") == name), None)
            if stale is None:
                raise
            self.delete_model_definition(stale["model_definition_id"])
            return self._call("POST", "model-definitions/create", "define the model", json=body)["model_definition"]["model_definition_id"]

    def delete_model_definition(self, model_definition_id: str) -> None:
        try:
            self._call("DELETE", "model-definitions/delete", "delete a model definition",
                       json={"model_definition_id": model_definition_id})
        except NotFound:
            pass

    # -- one served entity ---------------------------------------------------------------

    def make_entity(self, endpoint: str, spec: ExternalModelSpec, key: str | None, suffix: str = "") -> EntityObjects:
        """The secret (when the platform owns one) and the model definition of one entity,
        named ``agentwharf/<endpoint>/<entity><suffix>``.

        ``key`` is a plaintext key to store; None uses the spec's reference, or no key at all
        (a local server that wants none)."""
        name = f"{SECRET_PREFIX}{endpoint}/{spec.name}{suffix}"
        if key is not None:
            secret_id, owned = self.put_secret(name, spec, key), True
        elif spec.key_reference is not None:
            secret_id, owned = self.referenced_secret(spec), False
        else:
            # MLflow's provider sends "Authorization: Bearer <key>"; a server that wants no key
            # ignores it, so the platform stores a placeholder for the base URL's sake.
            secret_id, owned = self.put_secret(name, spec, "none"), True
        try:
            model_id = self.put_model_definition(name, spec, secret_id)
        except Exception:
            if owned:
                self.delete_secret(secret_id)
            raise
        return EntityObjects(model_id, secret_id, owned)

    def drop_entity(self, objects: EntityObjects) -> None:
        self.delete_model_definition(objects.model_definition_id)
        if objects.owns_secret and objects.secret_id:
            self.delete_secret(objects.secret_id)

    # -- the endpoint --------------------------------------------------------------------

    @staticmethod
    def model_configs(routes: list[tuple[str, int]], order: list[str], objects: dict[str, EntityObjects],
                      fallback: bool) -> dict[str, Any]:
        """MLflow's linkages for a traffic split (and fallbacks) over the entities."""
        primary = [(name, pct) for name, pct in routes if pct > 0]
        configs = [{"model_definition_id": objects[name].model_definition_id, "linkage_type": "PRIMARY",
                    "weight": pct / 100} for name, pct in primary]
        fields: dict[str, Any] = {"model_configs": configs}
        if len(primary) > 1:
            fields["routing_strategy"] = "REQUEST_BASED_TRAFFIC_SPLIT"
        if fallback:
            # With one primary, the others are its fallbacks; with a split, any entity may be
            # the one that failed, so every entity is a fallback, in the order listed.
            backups = [n for n in order if n != primary[0][0]] if len(primary) == 1 else list(order)
            configs += [{"model_definition_id": objects[name].model_definition_id, "linkage_type": "FALLBACK",
                         "weight": 1.0, "fallback_order": i} for i, name in enumerate(backups)]
            if backups:
                fields["fallback_config"] = {"strategy": "SEQUENTIAL", "max_attempts": len(backups)}
        return fields

    def create_endpoint(self, name: str, linkages: dict[str, Any], experiment_id: str, usage_tracking: bool) -> str:
        body = {"name": name, **linkages, "experiment_id": experiment_id, "usage_tracking": usage_tracking,
                "created_by": "agentwharf"}
        try:
            return self._call("POST", "endpoints/create", "create the endpoint", json=body)["endpoint"]["endpoint_id"]
        except AlreadyExists:
            raise AlreadyExists(f"MLflow's AI Gateway already has an endpoint named {name!r} (made in MLflow's UI?); "
                                "delete it there or choose another name") from None

    def update_endpoint(self, endpoint_id: str, linkages: dict[str, Any], usage_tracking: bool) -> None:
        body = {"endpoint_id": endpoint_id, **linkages, "usage_tracking": usage_tracking, "updated_by": "agentwharf"}
        if "fallback_config" not in body:
            # Fallbacks off: say so, or MLflow keeps the strategy of before.
            body["fallback_config"] = {"strategy": "FALLBACK_STRATEGY_UNSPECIFIED", "max_attempts": 0}
        self._call("POST", "endpoints/update", "update the endpoint", json=body)

    def delete_endpoint(self, endpoint_id: str) -> None:
        try:
            self._call("DELETE", "endpoints/delete", "delete the endpoint", json={"endpoint_id": endpoint_id})
        except NotFound:
            pass

    def endpoint(self, name: str) -> dict | None:
        try:
            return self._call("GET", "endpoints/get", "read the endpoint", params={"name": name})["endpoint"]
        except NotFound:
            return None
