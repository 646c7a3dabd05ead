"""Personal access tokens, in Databricks' paths and shapes (``WorkspaceClient().tokens`` and
``.token_management``):

    POST   /api/2.0/token/create                      a token for yourself (its value shown once)
    GET    /api/2.0/token/list                        your live tokens
    POST   /api/2.0/token/delete                      revoke one of yours
    PATCH  /api/2.0/token/{id}                        change its comment
    POST   /api/2.0/token-management/on-behalf-of/tokens   admins: a token for a service principal (or user)
    GET    /api/2.0/token-management/tokens           admins: every token (created_by_id, created_by_username)
    GET    /api/2.0/token-management/tokens/{id}      admins: one token
    PATCH  /api/2.0/token-management/tokens/{id}      admins: change its comment
    DELETE /api/2.0/token-management/tokens/{id}      admins: revoke any

A revoked token stops working at once; so do all of a principal's tokens when it is deactivated.
Tokens carry their owner's rights: Databricks' token scopes are refused (501), never ignored.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from agentwharf.auth.caller import Caller
from agentwharf.auth.identities import TokenInfo, token_lifetime_from
from agentwharf.control.routes import Body, CallerDep, Control, ControlState
from agentwharf.errors import InvalidParameter, NotFound, NotImplementedByPlatform, Unauthenticated
from agentwharf.store.models import now_ms

router = APIRouter()


def _who(caller: Caller | None) -> Caller:
    if caller is None:
        raise Unauthenticated("Authentication required")
    return caller


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


def _no_scopes(body: dict) -> None:
    """A scoped token would do less than its owner may; handing out an unscoped one instead
    would be a silent widening, so scopes are refused by name."""
    if body.get("scopes") or body.get("autoscope_enabled"):
        raise NotImplementedByPlatform("Not supported by agentwharf: token scopes (scopes, autoscope_enabled); "
                                       "a token carries all of its owner's rights; create a service principal with "
                                       "only the grants it needs instead")


def _comment_update(body: dict) -> str | None:
    """The new comment from ``{"token": {"comment"}, "update_mask": "comment"}``."""
    mask = body.get("update_mask")
    fields = [f.strip() for f in mask.split(",")] if isinstance(mask, str) else None
    if not fields:
        raise InvalidParameter("update_mask is required: the fields to change (agentwharf changes 'comment')")
    if set(fields) - {"comment", "*"}:
        raise NotImplementedByPlatform(f"Not supported by agentwharf: changing token fields {sorted(set(fields) - {'comment', '*'})}; "
                                       "only the comment of a token can change (token scopes do not exist here)")
    token = body.get("token")
    if not isinstance(token, dict):
        raise InvalidParameter("'token' must be an object holding the new comment")
    return _comment(token)


def _live(info: TokenInfo) -> bool:
    return not info.revoked and (info.expiry_time is None or info.expiry_time > now_ms())


# ---- your own tokens --------------------------------------------------------------------------


@router.post("/api/2.0/token/create")
async def create_own_token(control: Control, body: Body, caller: CallerDep) -> dict:
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "create tokens")
    _no_scopes(body)
    value, info = await asyncio.to_thread(control.identities.create_token, caller.name, _lifetime(body), _comment(body))
    return {"token_value": value, "token_info": info.to_json()}


@router.get("/api/2.0/token/list")
def list_own_tokens(control: Control, caller: CallerDep) -> dict:
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "list tokens")
    return {"token_infos": [t.to_json() for t in control.identities.list_tokens(caller.name) if _live(t)]}


def _own_token(control: ControlState, token_id: object, caller: Caller) -> str:
    if not isinstance(token_id, str) or not token_id:
        raise InvalidParameter("'token_id' is required")
    if control.identities.token_owner(token_id) != caller.name and not caller.is_admin:
        raise NotFound(f"No token with id {token_id!r}")  # someone else's: not yours to know about
    return token_id


@router.post("/api/2.0/token/delete")
async def revoke_own_token(control: Control, body: Body, caller: CallerDep) -> dict:
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "revoke tokens")
    await asyncio.to_thread(control.identities.revoke_token, _own_token(control, body.get("token_id"), caller))
    return {}


@router.patch("/api/2.0/token/{token_id}")
async def update_own_token(token_id: str, control: Control, body: Body, caller: CallerDep) -> dict:
    caller = _who(caller)
    control.gatekeeper.require_personal(caller, "change tokens")
    comment = _comment_update(body)
    await asyncio.to_thread(control.identities.set_token_comment, _own_token(control, token_id, caller), comment)
    return {}


# ---- everyone's tokens (admins) ---------------------------------------------------------------


@router.post("/api/2.0/token-management/on-behalf-of/tokens")
async def create_token_for(control: Control, body: Body, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "create tokens for others")
    principal = body.get("application_id") or body.get("principal")
    if not isinstance(principal, str):
        raise InvalidParameter("'application_id' (the service principal's application id, or a user name) is required")
    _no_scopes(body)
    value, info = await asyncio.to_thread(control.identities.create_token, principal, _lifetime(body), _comment(body))
    return {"token_value": value, "token_info": info.to_json()}


@router.get("/api/2.0/token-management/tokens")
def list_all_tokens(control: Control, request: Request, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "list everyone's tokens")
    owner = request.query_params.get("created_by_username")
    by_id = request.query_params.get("created_by_id")
    if by_id is not None:
        if not by_id.isdigit():
            raise InvalidParameter(f"created_by_id must be a principal's numeric id, got {by_id!r}")
        owner = control.identities.by_id(int(by_id)).name
    return {"token_infos": [t.to_json() for t in control.identities.list_tokens(owner)]}


@router.get("/api/2.0/token-management/tokens/{token_id}")
def get_any_token(token_id: str, control: Control, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "read others' tokens")
    return {"token_info": control.identities.token(token_id).to_json()}


@router.patch("/api/2.0/token-management/tokens/{token_id}")
async def update_any_token(token_id: str, control: Control, body: Body, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "change others' tokens")
    updated = await asyncio.to_thread(control.identities.set_token_comment, token_id, _comment_update(body))
    return updated.to_json()


@router.delete("/api/2.0/token-management/tokens/{token_id}")
async def revoke_any_token(token_id: str, control: Control, caller: CallerDep) -> dict:
    control.gatekeeper.require_admin(_who(caller), "revoke others' tokens")
    await asyncio.to_thread(control.identities.revoke_token, token_id)
    return {}
