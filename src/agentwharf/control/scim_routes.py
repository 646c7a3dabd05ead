"""SCIM 2.0 for users, service principals and groups, in Databricks' paths and shapes (what
``WorkspaceClient().users``, ``.service_principals``, ``.groups`` and ``.current_user`` send):

    GET     /api/2.0/preview/scim/v2/Me
    GET     /api/2.0/preview/scim/v2/{Users|ServicePrincipals|Groups}        filter, sortBy, paging, attributes
    POST    /api/2.0/preview/scim/v2/{Users|ServicePrincipals|Groups}        admins
    GET     /api/2.0/preview/scim/v2/{collection}/{id}
    PUT     /api/2.0/preview/scim/v2/{collection}/{id}                       admins: replace
    PATCH   /api/2.0/preview/scim/v2/{collection}/{id}                       admins: PatchOp
    DELETE  /api/2.0/preview/scim/v2/{collection}/{id}                       admins

Ids are numeric strings, one id space for the three kinds, as on Databricks (a group member is
named by its id alone); a name in place of an id is accepted too. Admins see everyone; anyone
else sees themselves and the groups they belong to.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from agentwharf.auth import groups as builtin
from agentwharf.auth.caller import Caller
from agentwharf.auth.caller import PrincipalInfo
from agentwharf.auth.identities import GROUP
from agentwharf.control import scim
from agentwharf.control.routes import Body, CallerDep, Control, ControlState
from agentwharf.errors import InvalidParameter, NotFound, NotImplementedByPlatform, PermissionDenied, Unauthenticated

router = APIRouter()
SCIM = "/api/2.0/preview/scim/v2"
_ADMIN_ROLE = "admin"


@dataclass(frozen=True)
class Collection:
    path: str
    kind: str
    #: The attribute holding the principal's name (Groups: displayName).
    key: str
    schemas: tuple[str, ...]
    #: What PUT and PATCH may change: lower-case name -> canonical name.
    writable: dict[str, str]


def _writable(*names: str) -> dict[str, str]:
    return {name.lower(): name for name in names}


COLLECTIONS = {
    "Users": Collection("Users", "user", "userName",
                        ("urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:workspace:2.0:User"),
                        _writable("displayName", "active", "externalId", "emails", "name", "entitlements", "roles", "groups")),
    "ServicePrincipals": Collection("ServicePrincipals", "service_principal", "applicationId",
                                    ("urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal",),
                                    _writable("displayName", "active", "externalId", "entitlements", "roles", "groups")),
    "Groups": Collection("Groups", GROUP, "displayName", ("urn:ietf:params:scim:schemas:core:2.0:Group",),
                         _writable("displayName", "externalId", "entitlements", "roles", "members")),
}
_BY_KIND = {c.kind: c for c in COLLECTIONS.values()}
#: Attributes kept as sent (see Principal.attributes), per kind.
_KEPT = {"user": ("emails", "name", "entitlements", "roles"), "service_principal": ("entitlements", "roles"),
         GROUP: ("entitlements", "roles")}


def _collection(name: str) -> Collection:
    found = COLLECTIONS.get(name)
    if found is None:
        raise NotImplementedByPlatform(f"Not supported by agentwharf: the SCIM resource type {name!r}; "
                                       f"agentwharf serves {', '.join(COLLECTIONS)} and Me")
    return found


def _who(caller: Caller | None) -> Caller:
    if caller is None:
        raise Unauthenticated("Authentication required")
    return caller


# ---- rendering -------------------------------------------------------------------------------


def _ref(info: PrincipalInfo) -> dict[str, str]:
    return {"display": info.name, "value": str(info.id), "$ref": f"{_BY_KIND[info.kind].path}/{info.id}"}


def resource(control: ControlState, info: PrincipalInfo) -> dict[str, Any]:
    """The principal or group as SCIM shows it."""
    collection = _BY_KIND[info.kind]
    kept = {k: v for k, v in info.attributes.items() if k in _KEPT[info.kind]}
    found: dict[str, Any] = {"id": str(info.id), collection.key: info.name, "schemas": list(collection.schemas)}
    if info.kind == GROUP:
        found["members"] = [_ref(m) for m in control.identities.direct_members(info.name)]
        found["meta"] = {"resourceType": "WorkspaceGroup"}
    else:
        found["displayName"] = info.display_name or info.name
        found["active"] = info.active
        if info.kind == "user" and "emails" not in kept and "@" in info.name:
            kept["emails"] = [{"value": info.name, "type": "work", "primary": True}]
    found["groups"] = [{**_ref(g), "type": "direct"} for g in control.identities.direct_groups(info.name)
                       if g.name != builtin.USERS]
    found.update({k: kept.get(k, []) for k in ("entitlements", "roles")})
    found.update({k: v for k, v in kept.items() if k not in found})
    if info.external_id:
        found["externalId"] = info.external_id
    return found


def _editable(control: ControlState, info: PrincipalInfo) -> dict[str, Any]:
    """The writable attributes, under their canonical names, as PatchOp operations see them."""
    current = resource(control, info)
    return {name: current.get(name) for name in _BY_KIND[info.kind].writable.values()}


# ---- reading ---------------------------------------------------------------------------------


def _find(control: ControlState, collection: Collection, ref: str) -> PrincipalInfo:
    """By id (numeric) or name, of this collection's kind."""
    try:
        info = control.identities.by_id(int(ref)) if ref.isdigit() else control.identities.principal(ref)
    except NotFound:
        info = None
    if info is None or info.kind != collection.kind:
        raise NotFound(f"No {collection.kind.replace('_', ' ')} with id {ref!r}")
    return info


def _member_of(control: ControlState, caller: Caller) -> frozenset[str]:
    info = control.identities.active_principal(caller.name)
    return info.groups if info is not None else frozenset()


@router.get(SCIM + "/Me")
def me(control: Control, caller: CallerDep) -> dict:
    caller = _who(caller)
    info = control.identities.principal(caller.name)
    # Databricks answers a service principal's /Me with its application id as userName.
    return {**resource(control, info), "userName": info.name, "via": caller.via}


@router.get(SCIM + "/{collection}")
def list_resources(collection: str, control: Control, request: Request, caller: CallerDep) -> dict:
    found = _collection(collection)
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "list users, service principals and groups")
    params = request.query_params
    matches = scim.parse_filter(params.get("filter"))
    member_of = _member_of(control, caller)
    infos = sorted(control.identities.list_principals(found.kind), key=lambda p: p.id)
    visible = [i for i in infos if caller.is_admin or i.name == caller.name or (i.kind == GROUP and i.name in member_of)]
    resources = [r for r in (resource(control, i) for i in visible) if matches(r)]
    resources = scim.sort(resources, params.get("sortBy"), params.get("sortOrder"))
    shown, start = scim.page(resources, scim.int_param(params.get("startIndex"), "startIndex", 1),
                             scim.int_param(params.get("count"), "count", scim.MAX_COUNT))
    shown = [scim.project(r, params.get("attributes"), params.get("excludedAttributes")) for r in shown]
    return scim.list_response(shown, len(resources), start)


@router.get(SCIM + "/{collection}/{ref}")
def get_resource(collection: str, ref: str, control: Control, request: Request, caller: CallerDep) -> dict:
    found = _collection(collection)
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "read users, service principals and groups")
    info = _find(control, found, ref)
    if not (caller.is_admin or info.name == caller.name or (info.kind == GROUP and info.name in _member_of(control, caller))):
        raise PermissionDenied(f"Only an admin may read other {found.path}")
    params = request.query_params
    return scim.project(resource(control, info), params.get("attributes"), params.get("excludedAttributes"))


# ---- changing --------------------------------------------------------------------------------


def _refs(control: ControlState, items: Any, what: str) -> list[PrincipalInfo]:
    """Members or groups named by ``{"value": id}`` (or ``{"display": name}``)."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise InvalidParameter(f"{what} must be a list of {{\"value\": id}} objects")
    found = []
    for item in items:
        if not isinstance(item, dict) or not (item.get("value") or item.get("display")):
            raise InvalidParameter(f"each of {what} needs a 'value' (an id), got {item!r}")
        ref = str(item.get("value") or item["display"])
        info = control.identities.by_id(int(ref)) if ref.isdigit() else control.identities.principal(ref)
        found.append(info)
    return found


def _kept_attributes(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for key in _KEPT[kind]:
        value = body.get(key)
        if value is None:
            continue
        if key == "name":
            if not isinstance(value, dict):
                raise InvalidParameter("name must be an object {givenName, familyName}")
        elif not isinstance(value, list) or not all(isinstance(v, dict) and "value" in v for v in value):
            raise InvalidParameter(f"{key} must be a list of {{\"value\": ...}} objects")
        kept[key] = value
    # The "admin" role is agentwharf's shorthand for membership of admins, not a stored role.
    if "roles" in kept:
        kept["roles"] = [r for r in kept["roles"] if r.get("value") != _ADMIN_ROLE]
    return kept


def _string(body: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidParameter(f"'{key}' is required (a non-empty string)" if required else f"'{key}' must be a string")
    return value


@router.post(SCIM + "/{collection}")
async def create_resource(collection: str, control: Control, body: Body, caller: CallerDep) -> dict:
    found = _collection(collection)
    caller = _who(caller)
    control.gatekeeper.require_admin(caller, f"create {found.path}")
    if found.kind == "service_principal":
        # Databricks gives a service principal a new UUID as its application id when none is sent.
        name = _string(body, "applicationId") or str(uuid.uuid4())
    else:
        name = _string(body, found.key, required=True)
    related = _refs(control, body.get("members" if found.kind == GROUP else "groups"),
                    "members" if found.kind == GROUP else "groups")
    roles = body.get("roles") if isinstance(body.get("roles"), list) else []
    is_admin = found.kind != GROUP and any(isinstance(r, dict) and r.get("value") == _ADMIN_ROLE for r in roles)
    active = scim.as_bool(body["active"], "active") if body.get("active") is not None else True
    info = await asyncio.to_thread(
        control.identities.create_principal, name, found.kind, is_admin=is_admin,
        display_name=_string(body, "displayName") if found.kind != GROUP else name, created_by=caller.name,
        external_id=_string(body, "externalId"), attributes=_kept_attributes(found.kind, body), active=active)
    for other in related:
        if found.kind == GROUP:
            await asyncio.to_thread(control.identities.change_members, info.name, add=[other.name])
        elif other.name != builtin.USERS:
            await asyncio.to_thread(control.identities.change_members, other.name, add=[info.name])
    return resource(control, control.identities.principal(info.name))


@router.put(SCIM + "/{collection}/{ref}")
async def replace_resource(collection: str, ref: str, control: Control, body: Body, caller: CallerDep) -> dict:
    found = _collection(collection)
    caller = _who(caller)
    control.gatekeeper.require_admin(caller, f"change {found.path}")
    info = _find(control, found, ref)
    sent = body.get(found.key)
    if found.kind != GROUP and sent is not None and sent != info.name:
        raise InvalidParameter(f"{found.key} cannot be changed ({info.name!r}): grants, tokens and MLflow know the "
                               "principal by it; create a new one instead")
    view = {name: body.get(name) for name in found.writable.values()}
    if found.kind != GROUP and view["active"] is None:
        view["active"] = True
    if "groups" in view and "groups" not in body:
        view["groups"] = _editable(control, info)["groups"]  # PUT without groups leaves memberships alone
    if found.kind == GROUP and "members" not in body:
        view["members"] = _editable(control, info)["members"]
    return await _write(control, found, info, view, caller)


@router.patch(SCIM + "/{collection}/{ref}")
async def patch_resource(collection: str, ref: str, control: Control, body: Body, caller: CallerDep) -> dict:
    found = _collection(collection)
    caller = _who(caller)
    control.gatekeeper.require_admin(caller, f"change {found.path}")
    info = _find(control, found, ref)
    view = scim.apply(_editable(control, info), scim.operations(body), found.writable)
    return await _write(control, found, info, view, caller)


async def _write(control: ControlState, found: Collection, info: PrincipalInfo, view: dict[str, Any], caller: Caller) -> dict:
    """Make the principal or group look like ``view`` (its writable attributes). Everything
    is checked first; then memberships change (each change checked again as it is made), then
    the attributes."""
    identities = control.identities
    name = info.name
    changes: dict[str, Any] = {"external_id": _string(view, "externalId"),
                               "attributes": _kept_attributes(found.kind, view) or None}
    if found.kind == GROUP:
        members = [m.name for m in _refs(control, view.get("members"), "members")]
        changes["new_name"] = changes["display_name"] = _string(view, "displayName", required=True)
    else:
        joined = [g for g in _refs(control, view.get("groups"), "groups") if g.name != builtin.USERS]
        for group in joined:
            if group.kind != GROUP:
                raise InvalidParameter(f"{group.name!r} in groups is not a group")
        changes["active"] = scim.as_bool(view["active"], "active") if view.get("active") is not None else True
        changes["display_name"] = _string(view, "displayName")
        if name == caller.name and not changes["active"]:
            raise InvalidParameter("You cannot deactivate yourself")
    if found.kind == GROUP and name != builtin.USERS:
        await asyncio.to_thread(identities.change_members, name, add=members, replace_all=True, keep_admin=caller.name)
    elif found.kind != GROUP:
        wanted = {g.name for g in joined}
        current = {g.name for g in identities.direct_groups(name)} - {builtin.USERS}
        for group in sorted(current - wanted):
            await asyncio.to_thread(identities.change_members, group, remove=[name], keep_admin=caller.name)
        for group in sorted(wanted - current):
            await asyncio.to_thread(identities.change_members, group, add=[name])
    updated = await asyncio.to_thread(identities.update_principal, name, **changes)
    return resource(control, updated)


@router.delete(SCIM + "/{collection}/{ref}")
async def delete_resource(collection: str, ref: str, control: Control, caller: CallerDep) -> dict:
    found = _collection(collection)
    caller = _who(caller)
    control.gatekeeper.require_admin(caller, f"delete {found.path}")
    info = _find(control, found, ref)
    if info.name == caller.name:
        raise InvalidParameter("You cannot delete yourself")
    await asyncio.to_thread(control.identities.delete_principal, info.name)
    return {}
