"""What a logged model declares about access, read from its MLmodel file.

``resources`` / ``auth_policy.system_auth_policy`` list what the model's own (system)
credential may reach; agentwharf honours serving endpoints, which map to its endpoints of the
same name. ``auth_policy.user_auth_policy.api_scopes`` asks for an on-behalf-of-user token.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPolicy:
    #: Serving endpoints the system credential may invoke; empty means no credential.
    endpoints: tuple[str, ...] = ()
    #: API scopes of the on-behalf-of-user token; None means the model gets none.
    api_scopes: tuple[str, ...] | None = None


def _serving_endpoints(resources) -> list[str]:
    if not isinstance(resources, dict):
        return []
    names = []
    for entry in (resources.get("databricks") or {}).get("serving_endpoint") or []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            names.append(entry["name"])
    return names


def policy_from_mlmodel(mlmodel: dict) -> ModelPolicy:
    auth_policy = mlmodel.get("auth_policy") or {}
    system = auth_policy.get("system_auth_policy") if isinstance(auth_policy, dict) else None
    # With an auth_policy, its system part is the whole truth; without one, MLflow's older
    # top-level ``resources`` declares the same thing.
    declared = (system or {}).get("resources") if auth_policy else mlmodel.get("resources")
    endpoints = tuple(dict.fromkeys(_serving_endpoints(declared)))
    user = auth_policy.get("user_auth_policy") if isinstance(auth_policy, dict) else None
    scopes = None
    if isinstance(user, dict) and isinstance(user.get("api_scopes"), list):
        scopes = tuple(str(scope) for scope in user["api_scopes"])
    return ModelPolicy(endpoints=endpoints, api_scopes=scopes)
