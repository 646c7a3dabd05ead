"""REST for permissions, in Databricks' paths and shapes where it has them:

    GET/PUT/PATCH /api/2.0/permissions/serving-endpoints/{id or name}
    GET           /api/2.0/permissions/serving-endpoints/{id or name}/permissionLevels
    GET           /api/2.0/permissions/authorization/tokens[/permissionLevels]   who may use tokens: everyone (read only)
    any           /api/2.0/permissions/{other object type}/...                     501, naming the type
    GET/PUT       /api/2.0/agentwharf/model-permissions/{model or catalog.schema prefix}

Grants name users, service principals or groups; a member of a group gets the strongest level
among its own grant and its groups'. Admins (members of ``admins``) manage every endpoint, which
the access control list shows as an entry inherited from the root object, as Databricks does.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from agentwharf.auth import groups
from agentwharf.auth.caller import Caller
from agentwharf.auth.identities import GROUP, PrincipalInfo
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control.routes import Body, CallerDep, Control, ControlState
from agentwharf.errors import InvalidParameter, MethodNotAllowed, NotFound, NotImplementedByPlatform, Unauthenticated
from agentwharf.store.models import Endpoint

router = APIRouter()
_PERMISSIONS = "/api/2.0/permissions"
#: Where Databricks says an endpoint's inherited grants come from.
_ROOT = "/serving-endpoints/"
_ACL_KEY = {"user": "user_name", "service_principal": "service_principal_name", GROUP: "group_name"}
_LEVEL_DESCRIPTIONS = {
    PermissionLevel.CAN_VIEW: "See the endpoint and its metadata",
    PermissionLevel.CAN_QUERY: "Query the endpoint (includes CAN_VIEW)",
    PermissionLevel.CAN_REVIEW: "agentwharf: read its traces and inference table, give feedback (includes CAN_QUERY)",
    PermissionLevel.CAN_MANAGE: "Deploy to, update and delete the endpoint, set its permissions (includes all)",
}
_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


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


def acl_view(control: ControlState, endpoint: Endpoint) -> dict:
    """The endpoint's access control list: one entry per principal or group, direct grants
    first, the admins' inherited CAN_MANAGE last."""
    entries: dict[str, dict] = {}

    def entry(info: PrincipalInfo) -> dict:
        found = entries.setdefault(info.name, {_ACL_KEY[info.kind]: info.name, "all_permissions": []})
        if info.kind != GROUP and info.display_name:
            found["display_name"] = info.display_name
        return found

    for name, level in sorted(control.identities.endpoint_grants(endpoint.name).items()):
        try:
            info = control.identities.principal(name)
        except NotFound:  # deleted between the two reads
            continue
        entry(info)["all_permissions"].append({"permission_level": level.value, "inherited": False})
    entry(control.identities.principal(groups.ADMINS))["all_permissions"].append(
        {"permission_level": PermissionLevel.CAN_MANAGE.value, "inherited": True, "inherited_from_object": [_ROOT]})
    return {"object_id": f"/serving-endpoints/{endpoint.id}", "object_type": "serving-endpoint",
            "access_control_list": list(entries.values())}


def _grantee(control: ControlState, entry: dict) -> PrincipalInfo:
    """Who an access_control_list entry names. ``group_name`` is a group, or else (for
    databricks-agents, whose set_permissions sends every name without an "@" as a group) the
    user or service principal of that name."""
    identities = control.identities
    for key in ("user_name", "service_principal_name"):
        name = entry.get(key)
        if name is not None:
            if not isinstance(name, str) or not name:
                raise InvalidParameter(f"'{key}' must be a non-empty string")
            info = identities.principal(name)
            if info.kind == GROUP:
                raise InvalidParameter(f"{name!r} is a group: grant it with 'group_name'")
            return info
    name = entry.get("group_name")
    if not isinstance(name, str) or not name:
        raise InvalidParameter("each access_control_list entry needs 'user_name', 'service_principal_name' or 'group_name'")
    try:
        return identities.principal(name)
    except NotFound:
        raise NotFound(f"No group, user or service principal named {name!r}") from None


def _parse_acl(control: ControlState, body: dict) -> list[tuple[PrincipalInfo, PermissionLevel]]:
    # Absent is empty: the SDK sends {} for set_permissions() without a list, which Databricks
    # reads as "no direct grants" (PUT) and "nothing to add" (PATCH).
    acl = body.get("access_control_list", [])
    if not isinstance(acl, list):
        raise InvalidParameter("'access_control_list' must be a list of "
                               "{user_name | service_principal_name | group_name, permission_level}")
    parsed = []
    for entry in acl:
        if not isinstance(entry, dict):
            raise InvalidParameter("each access_control_list entry must be an object")
        info = _grantee(control, entry)
        level = PermissionLevel.parse(entry.get("permission_level", ""))
        if info.name == groups.ADMINS and info.kind == GROUP and level is PermissionLevel.CAN_MANAGE:
            continue  # admins manage every endpoint already (an inherited entry clients echo back)
        parsed.append((info, level))
    return parsed


@router.get(_PERMISSIONS + "/serving-endpoints/{name}")
def get_endpoint_permissions(name: str, control: Control, caller: CallerDep) -> dict:
    endpoint = _endpoint(control, name)
    control.gatekeeper.require_endpoint(_who(caller), endpoint.name, PermissionLevel.CAN_VIEW)
    return acl_view(control, endpoint)


@router.get(_PERMISSIONS + "/serving-endpoints/{name}/permissionLevels")
def get_endpoint_permission_levels(name: str, control: Control, caller: CallerDep) -> dict:
    endpoint = _endpoint(control, name)
    control.gatekeeper.require_endpoint(_who(caller), endpoint.name, PermissionLevel.CAN_VIEW)
    return {"permission_levels": [{"permission_level": level.value, "description": text}
                                  for level, text in _LEVEL_DESCRIPTIONS.items()]}


async def _set_acl(control: ControlState, name: str, body: dict, caller: Caller | None, replace: bool) -> dict:
    endpoint = _endpoint(control, name)
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "change permissions")
    control.gatekeeper.require_endpoint(caller, endpoint.name, PermissionLevel.CAN_MANAGE)
    wanted = _parse_acl(control, body)  # every name checked before the first change
    identities = control.identities
    if replace:
        # PUT replaces the direct grants; the caller keeps theirs so an endpoint is never left
        # without a manager by accident.
        named = {info.name for info, _ in wanted}
        for existing in identities.endpoint_grants(endpoint.name):
            if existing not in named and existing != caller.name:
                await asyncio.to_thread(identities.set_endpoint_level, endpoint.name, existing,
                                        PermissionLevel.NO_PERMISSIONS, endpoint.experiment_id)
    for info, level in wanted:
        await asyncio.to_thread(identities.set_endpoint_level, endpoint.name, info.name, level, endpoint.experiment_id)
    return acl_view(control, endpoint)


@router.patch(_PERMISSIONS + "/serving-endpoints/{name}")
async def update_endpoint_permissions(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    return await _set_acl(control, name, body, caller, replace=False)


@router.put(_PERMISSIONS + "/serving-endpoints/{name}")
async def set_endpoint_permissions(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    return await _set_acl(control, name, body, caller, replace=True)


# ---- token permissions: who may use tokens (everyone; admins manage) ------------------------


@router.get(_PERMISSIONS + "/authorization/tokens")
def get_token_permissions(control: Control, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "read token permissions")
    # Admins manage everyone's tokens by being admins; Databricks' token ACL names CAN_USE only.
    return {"object_id": "authorization/tokens", "object_type": "tokens", "access_control_list": [
        {"group_name": groups.USERS, "all_permissions": [{"permission_level": "CAN_USE", "inherited": False}]}]}


@router.get(_PERMISSIONS + "/authorization/tokens/permissionLevels")
def get_token_permission_levels(control: Control, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "read token permission levels")
    return {"permission_levels": [{"permission_level": "CAN_USE", "description": "Create and use personal access tokens"}]}


@router.api_route(_PERMISSIONS + "/{object_type}/{rest:path}", methods=_ALL)
def other_permissions(object_type: str, rest: str, request: Request) -> None:
    """Every other object type, and changes to token permissions: named, never a 404."""
    if object_type == "serving-endpoints":
        raise MethodNotAllowed(f"No route {request.method} {request.url.path}")
    if object_type == "authorization" and rest.startswith("tokens"):
        raise NotImplementedByPlatform("Not supported by agentwharf: changing token permissions; every user and "
                                       "service principal may create tokens for themselves, admins manage everyone's")
    what = f"{object_type}/{rest.split('/')[0]}" if object_type == "authorization" else object_type
    raise NotImplementedByPlatform(f"Not supported by agentwharf: permissions on {what!r}; agentwharf keeps permissions "
                                   "on serving-endpoints (here) and on registered models "
                                   "(/api/2.0/agentwharf/model-permissions/{name})")


# ---- registered-model permissions (MLflow decides; prefixes are agentwharf's) --------------


def _grantees(control: ControlState) -> list[PrincipalInfo]:
    return [*control.identities.list_principals(), *control.identities.list_principals(GROUP)]


@router.get("/api/2.0/agentwharf/model-permissions/{target}")
def get_model_permissions(target: str, control: Control, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "read registered-model permissions")
    identities = control.identities
    if identities.is_prefix(target):
        grants = [{"principal": p, "permission": perm} for prefix, p, perm in identities.prefix_grants() if prefix == target]
    else:
        grants = []
        for principal in _grantees(control):
            permission = identities.model_grant(target, principal.name)
            if permission:
                grants.append({"principal": principal.name, "permission": permission})
    return {"target": target, "is_prefix": identities.is_prefix(target), "grants": grants}


@router.put("/api/2.0/agentwharf/model-permissions/{target}")
async def set_model_permission(target: str, control: Control, body: Body, caller: CallerDep) -> dict:
    """``{"principal": ..., "permission": "READ|USE|EDIT|MANAGE|NO_PERMISSIONS"}``. USE is what
    deploying needs. ``target`` is a registered model or a ``catalog``/``catalog.schema`` prefix;
    ``principal`` a user, service principal or group."""
    control.gatekeeper.require_admin(_who(caller), "grant registered-model permissions")
    principal, permission = body.get("principal"), body.get("permission")
    if not isinstance(principal, str) or not isinstance(permission, str):
        raise InvalidParameter("Body must be {\"principal\": name, \"permission\": READ|USE|EDIT|MANAGE|NO_PERMISSIONS}")
    control.identities.principal(principal)
    names = await asyncio.to_thread(control.registry.model_names) if control.identities.is_prefix(target) else []
    await asyncio.to_thread(control.identities.grant_model, target, principal,
                            None if permission.upper() == "NO_PERMISSIONS" else permission, names)
    return get_model_permissions(target, control, caller)
