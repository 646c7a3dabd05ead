"""REST for identities and permissions, in Databricks' paths and shapes where it has them:

    GET/PUT/PATCH /api/2.0/permissions/serving-endpoints/{name or id}
    POST          /api/2.0/token/create            a token for yourself (shown once)
    GET           /api/2.0/token/list              your tokens
    POST          /api/2.0/token/delete            revoke one of yours
    POST          /api/2.0/token-management/on-behalf-of/tokens   admin: a token for someone
    GET           /api/2.0/token-management/tokens                admin: every token
    DELETE        /api/2.0/token-management/tokens/{id}           admin: revoke any
    GET/POST      /api/2.0/preview/scim/v2/Users | ServicePrincipals   admin: principals
    DELETE        /api/2.0/preview/scim/v2/Users/{name} | ServicePrincipals/{name}
    GET           /api/2.0/preview/scim/v2/Me
    GET/PUT       /api/2.0/agentwharf/model-permissions/{model or catalog.schema prefix}
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from agentwharf.auth.caller import Caller
from agentwharf.auth.identities import token_lifetime_from
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control.routes import Body, CallerDep, Control, ControlState
from agentwharf.errors import InvalidParameter, NotFound, NotImplementedByPlatform, Unauthenticated
from agentwharf.store.models import Endpoint

router = APIRouter()
_SCIM = "/api/2.0/preview/scim/v2"
_KIND_PATHS = {"Users": "user", "ServicePrincipals": "service_principal"}


def _who(caller: Caller | None) -> Caller:
    if caller is None:
        raise Unauthenticated("Authentication required")
    return caller


# ---- serving-endpoint permissions -----------------------------------------------------------


def _endpoint(control: ControlState, name_or_id: str) -> Endpoint:
    """Databricks' clients address permissions by endpoint id; people use the name."""
    endpoint = control.endpoints.find(name_or_id)
    if endpoint is None:
        endpoint = next((e for e in control.endpoints.list() if e.id == name_or_id), None)
    if endpoint is None:
        raise NotFound(f"Endpoint {name_or_id!r} does not exist")
    return endpoint


def _acl_view(control: ControlState, endpoint: Endpoint) -> dict:
    entries = []
    for name, level in sorted(control.identities.endpoint_grants(endpoint.name).items()):
        principal = control.identities.active_principal(name)
        key = "service_principal_name" if principal is not None and principal.kind == "service_principal" else "user_name"
        entries.append({key: name, "all_permissions": [{"permission_level": level.value, "inherited": False}]})
    return {"object_id": f"/serving-endpoints/{endpoint.id}", "object_type": "serving-endpoint",
            "access_control_list": entries}


def _parse_acl(control: ControlState, body: dict) -> list[tuple[str, PermissionLevel]]:
    acl = body.get("access_control_list")
    if not isinstance(acl, list):
        raise InvalidParameter("'access_control_list' must be a list of {user_name | service_principal_name, permission_level}")
    parsed = []
    for entry in acl:
        if not isinstance(entry, dict):
            raise InvalidParameter("each access_control_list entry must be an object")
        name = entry.get("user_name") or entry.get("service_principal_name")
        if not name and entry.get("group_name"):
            # databricks-agents' set_permissions sends every name without an "@" as a group
            # (users=["alice"] -> group_name "alice"). agentwharf has no groups: a "group" that is
            # a user or service principal is granted as that principal, any other is refused.
            name = entry["group_name"]
            if control.identities.active_principal(name) is None:
                raise NotImplementedByPlatform(f"Groups are not supported by agentwharf, and there is no user or "
                                               f"service principal named {name!r}; grant users and service principals")
        if not isinstance(name, str) or not name:
            raise InvalidParameter("each access_control_list entry needs 'user_name' or 'service_principal_name'")
        parsed.append((name, PermissionLevel.parse(entry.get("permission_level", ""))))
    return parsed


@router.get("/api/2.0/permissions/serving-endpoints/{name}")
def get_endpoint_permissions(name: str, control: Control, caller: CallerDep) -> dict:
    endpoint = _endpoint(control, name)
    control.gatekeeper.require_endpoint(_who(caller), endpoint.name, PermissionLevel.CAN_VIEW)
    return _acl_view(control, endpoint)


async def _set_acl(control: ControlState, name: str, body: dict, caller: Caller | None, replace: bool) -> dict:
    endpoint = _endpoint(control, name)
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "change permissions")
    control.gatekeeper.require_endpoint(caller, endpoint.name, PermissionLevel.CAN_MANAGE)
    wanted = _parse_acl(control, body)
    for principal, _ in wanted:  # every name checked before the first change
        control.identities.principal(principal)
    if replace:
        # PUT replaces the direct grants; the caller keeps CAN_MANAGE so an endpoint is never
        # left without a manager by accident.
        named = {principal for principal, _ in wanted}
        for existing in control.identities.endpoint_grants(endpoint.name):
            if existing not in named and existing != caller.name:
                await asyncio.to_thread(control.identities.set_endpoint_level, endpoint.name, existing,
                                        PermissionLevel.NO_PERMISSIONS, endpoint.experiment_id)
    for principal, level in wanted:
        await asyncio.to_thread(control.identities.set_endpoint_level, endpoint.name, principal, level, endpoint.experiment_id)
    return _acl_view(control, endpoint)


@router.patch("/api/2.0/permissions/serving-endpoints/{name}")
async def update_endpoint_permissions(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    return await _set_acl(control, name, body, caller, replace=False)


@router.put("/api/2.0/permissions/serving-endpoints/{name}")
async def set_endpoint_permissions(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    return await _set_acl(control, name, body, caller, replace=True)


# ---- registered-model permissions (MLflow decides; prefixes are agentwharf's) --------------


@router.get("/api/2.0/agentwharf/model-permissions/{target}")
def get_model_permissions(target: str, control: Control, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "read registered-model permissions")
    if control.identities.is_prefix(target):
        grants = [{"principal": p, "permission": perm} for prefix, p, perm in control.identities.prefix_grants() if prefix == target]
    else:
        grants = []
        for principal in control.identities.list_principals():
            permission = control.identities.model_permission(target, principal.name)
            if permission:
                grants.append({"principal": principal.name, "permission": permission})
    return {"target": target, "is_prefix": control.identities.is_prefix(target), "grants": grants}


@router.put("/api/2.0/agentwharf/model-permissions/{target}")
async def set_model_permission(target: str, control: Control, body: Body, caller: CallerDep) -> dict:
    """``{"principal": ..., "permission": "READ|USE|EDIT|MANAGE|NO_PERMISSIONS"}``. USE is what
    deploying needs. ``target`` is a registered model or a ``catalog``/``catalog.schema`` prefix."""
    control.gatekeeper.require_admin(_who(caller), "grant registered-model permissions")
    principal, permission = body.get("principal"), body.get("permission")
    if not isinstance(principal, str) or not isinstance(permission, str):
        raise InvalidParameter("Body must be {\"principal\": name, \"permission\": READ|USE|EDIT|MANAGE|NO_PERMISSIONS}")
    control.identities.principal(principal)
    names = await asyncio.to_thread(control.registry.model_names) if control.identities.is_prefix(target) else []
    await asyncio.to_thread(control.identities.grant_model, target, principal,
                            None if permission.upper() == "NO_PERMISSIONS" else permission, names)
    return get_model_permissions(target, control, caller)


# ---- tokens -------------------------------------------------------------------------------


def _lifetime(body: dict) -> int | None:
    lifetime = token_lifetime_from(body.get("lifetime_seconds"))
    if lifetime is not None and (not isinstance(lifetime, int) or isinstance(lifetime, bool)):
        raise InvalidParameter(f"lifetime_seconds must be a whole number of seconds, got {body.get('lifetime_seconds')!r}")
    return lifetime


def _comment(body: dict) -> str | None:
    comment = body.get("comment")
    if comment is not None and not isinstance(comment, str):
        raise InvalidParameter("comment must be a string")
    return comment


@router.post("/api/2.0/token/create")
async def create_own_token(control: Control, body: Body, caller: CallerDep) -> dict:
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "create tokens")
    value, info = await asyncio.to_thread(control.identities.create_token, caller.name, _lifetime(body), _comment(body))
    return {"token_value": value, "token_info": info.to_json()}


@router.get("/api/2.0/token/list")
def list_own_tokens(control: Control, caller: CallerDep) -> dict:
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "list tokens")
    return {"token_infos": [t.to_json() for t in control.identities.list_tokens(caller.name) if not t.revoked]}


@router.post("/api/2.0/token/delete")
async def revoke_own_token(control: Control, body: Body, caller: CallerDep) -> dict:
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "revoke tokens")
    token_id = body.get("token_id")
    if not isinstance(token_id, str):
        raise InvalidParameter("'token_id' is required")
    if control.identities.token_owner(token_id) != caller.name and not caller.is_admin:
        raise NotFound(f"No token with id {token_id!r}")
    await asyncio.to_thread(control.identities.revoke_token, token_id)
    return {}


@router.post("/api/2.0/token-management/on-behalf-of/tokens")
async def create_token_for(control: Control, body: Body, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "create tokens for others")
    principal = body.get("application_id") or body.get("principal")
    if not isinstance(principal, str):
        raise InvalidParameter("'application_id' (the user or service principal name) is required")
    value, info = await asyncio.to_thread(control.identities.create_token, principal, _lifetime(body), _comment(body))
    return {"token_value": value, "token_info": info.to_json()}


@router.get("/api/2.0/token-management/tokens")
def list_all_tokens(control: Control, request: Request, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "list everyone's tokens")
    owner = request.query_params.get("created_by_username")
    return {"token_infos": [t.to_json() for t in control.identities.list_tokens(owner)]}


@router.delete("/api/2.0/token-management/tokens/{token_id}")
async def revoke_any_token(token_id: str, control: Control, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "revoke others' tokens")
    await asyncio.to_thread(control.identities.revoke_token, token_id)
    return {}


# ---- users and service principals (SCIM-shaped) ---------------------------------------------


def _scim(principal) -> dict:
    key = "userName" if principal.kind == "user" else "applicationId"
    return {"id": principal.name, key: principal.name, "displayName": principal.display_name or principal.name,
            "active": principal.active, "roles": [{"value": "admin"}] if principal.is_admin else []}


@router.get(_SCIM + "/Me")
def me(control: Control, caller: CallerDep) -> dict:
    caller = _who(caller)
    return {**_scim(control.identities.principal(caller.name)), "via": caller.via}


@router.get(_SCIM + "/{collection}")
def list_principals(collection: str, control: Control, caller: CallerDep) -> dict:
    kind = _kind(collection)
    control.gatekeeper.require_personal(_who(caller), "list principals")
    resources = [_scim(p) for p in control.identities.list_principals(kind)]
    return {"totalResults": len(resources), "Resources": resources}


@router.post(_SCIM + "/{collection}")
async def create_principal(collection: str, control: Control, body: Body, caller: CallerDep) -> dict:
    kind = _kind(collection)
    caller = _who(caller)
    control.gatekeeper.require_admin(caller, "create users and service principals")
    name = body.get("userName") if kind == "user" else (body.get("applicationId") or body.get("displayName"))
    is_admin = any(isinstance(r, dict) and r.get("value") == "admin" for r in body.get("roles") or [])
    principal = await asyncio.to_thread(control.identities.create_principal, name, kind, is_admin=is_admin,
                                        display_name=body.get("displayName"), created_by=caller.name)
    return _scim(principal)


@router.delete(_SCIM + "/{collection}/{name}")
async def delete_principal(collection: str, name: str, control: Control, caller: CallerDep) -> dict:
    kind = _kind(collection)
    caller = _who(caller)
    control.gatekeeper.require_admin(caller, "delete users and service principals")
    principal = control.identities.principal(name)
    if principal.kind != kind:
        raise NotFound(f"No {kind.replace('_', ' ')} named {name!r}")
    if principal.name == caller.name:
        raise InvalidParameter("You cannot delete yourself")
    await asyncio.to_thread(control.identities.delete_principal, name)
    return {}


def _kind(collection: str) -> str:
    kind = _KIND_PATHS.get(collection)
    if kind is None:
        raise NotFound(f"No SCIM collection {collection!r}; use Users or ServicePrincipals")
    return kind
