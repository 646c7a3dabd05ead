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


def _dict(value) -> dict:
    """``value`` if it is a mapping; anything else (a malformed MLmodel) declares nothing."""
    return value if isinstance(value, dict) else {}


def _serving_endpoints(resources) -> list[str]:
    entries = _dict(_dict(resources).get("databricks")).get("serving_endpoint")
    if not isinstance(entries, list):
        return []
    return [entry["name"] for entry in entries if isinstance(entry, dict) and isinstance(entry.get("name"), str)]


def policy_from_mlmodel(mlmodel: dict) -> ModelPolicy:
    mlmodel = _dict(mlmodel)
    auth_policy = mlmodel.get("auth_policy")
    # With an auth_policy, its system part is the whole truth; without one, MLflow's older
    # top-level ``resources`` declares the same thing.
    if auth_policy:
        declared = _dict(_dict(auth_policy).get("system_auth_policy")).get("resources")
    else:
        declared = mlmodel.get("resources")
    endpoints = tuple(dict.fromkeys(_serving_endpoints(declared)))
    user = _dict(auth_policy).get("user_auth_policy")
    scopes = None
    if isinstance(user, dict) and isinstance(user.get("api_scopes"), list):
        scopes = tuple(str(scope) for scope in user["api_scopes"])
    return ModelPolicy(endpoints=endpoints, api_scopes=scopes)
