"""Principals (users, service principals), groups, personal access tokens and grants: stored in
agentwharf's tables, read from memory.

Every request checks a token and usually a grant, so both are answered from in-process maps,
group membership included (``auth.groups`` expands it once per change, not per request). The
maps are exact, not merely cached: every change goes through this service, in this process,
which rebuilds them after its transaction commits. Rebuilds are serialised (``_reload_lock``)
so a slower rebuild never replaces a newer one with what it read before the newer change.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.exc import IntegrityError

from agentwharf.auth import groups, tokens
from agentwharf.auth.caller import Caller, PrincipalInfo
from agentwharf.auth.levels import PermissionLevel
from agentwharf.auth.mlflow_bridge import MlflowAuthBridge
from agentwharf.auth.model_grants import ModelGrants
from agentwharf.errors import AlreadyExists, InvalidParameter, NotFound
from agentwharf.store.database import Database
from agentwharf.store.models import AccessToken, EndpointGrant, GroupMember, ModelPrefixGrant, Principal, now_ms

#: Who signs in (and holds tokens); groups only hold grants and members.
KINDS = ("user", "service_principal")
GROUP = groups.KIND
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
#: Group names are display names (Databricks' "Data Engineers"): inner spaces allowed.
_GROUP_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._@+ -]{0,126}[A-Za-z0-9._@+-])?")
MAX_TOKEN_LIFETIME_SECONDS = 10 * 365 * 24 * 3600
#: "Leave this field as it is" for ``update_principal``.
UNCHANGED: Any = object()


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    principal: str
    comment: str | None
    creation_time: int
    expiry_time: int | None
    revoked: bool
    principal_id: int | None = None

    def to_json(self) -> dict:
        # Databricks' shape (``token_info``); -1 is its "never expires".
        return {"token_id": self.token_id, "owner": self.principal, "comment": self.comment or "",
                "creation_time": self.creation_time, "expiry_time": self.expiry_time if self.expiry_time is not None else -1,
                "revoked": self.revoked, "owner_id": self.principal_id, "created_by_id": self.principal_id,
                "created_by_username": self.principal}


def _info(row, member_of: frozenset[str]) -> PrincipalInfo:
    """From a row of aw_principals' columns."""
    return PrincipalInfo(row.id, row.name, row.kind, row.display_name,
                         row.kind in KINDS and groups.ADMINS in member_of, row.active, row.created_at,
                         row.external_id, dict(row.attributes or {}), member_of)


class IdentityService(ModelGrants):
    def __init__(self, db: Database, bridge: MlflowAuthBridge | None):
        self.db = db
        self.bridge = bridge
        self._reload_lock = threading.Lock()
        #: Serialises membership changes (each reads the members it changes).
        self._change_lock = threading.Lock()
        self._principals: dict[str, PrincipalInfo] = {}
        self._by_id: dict[int, str] = {}
        #: group name -> names of its direct members (``users`` has none stored).
        self._members: dict[str, tuple[str, ...]] = {}
        #: token hash -> (principal name, token id, expires_at ms or None)
        self._tokens: dict[str, tuple[str, str, int | None]] = {}
        #: endpoint name -> {principal or group name: level}
        self._grants: dict[str, dict[str, PermissionLevel]] = {}
        #: Counts the changes of the maps above, so other processes (gateway processes, through
        #: the published serving state) know when to reload theirs.
        self.revision = 0
        self.reload()

    # ---- in-memory view -------------------------------------------------------------------

    def reload(self) -> None:
        # Plain column rows, not ORM objects: this runs after every change, and building ORM
        # instances for every principal and token was most of a user's creation time.
        with self._reload_lock, self.db.session() as session:
            rows = session.execute(select(Principal.id, Principal.name, Principal.kind, Principal.display_name,
                                          Principal.active, Principal.created_at, Principal.external_id,
                                          Principal.attributes)).all()
            by_id = {row.id: row.name for row in rows}
            direct: dict[str, list[str]] = {}
            for group_id, member_id in session.execute(select(GroupMember.group_id, GroupMember.member_id)):
                direct.setdefault(by_id[group_id], []).append(by_id[member_id])
            live_tokens = {token_hash: (by_id[principal_id], token_id, expires_at)
                           for token_hash, principal_id, token_id, expires_at in session.execute(
                               select(AccessToken.token_hash, AccessToken.principal_id, AccessToken.id, AccessToken.expires_at)
                               .where(AccessToken.revoked_at.is_(None)))}
            grants: dict[str, dict[str, PermissionLevel]] = {}
            for endpoint, principal_id, level in session.execute(
                    select(EndpointGrant.endpoint_name, EndpointGrant.principal_id, EndpointGrant.level)):
                grants.setdefault(endpoint, {})[by_id[principal_id]] = PermissionLevel(level)
            closure = groups.memberships(direct, [row.name for row in rows if row.kind in KINDS])
            principals = {row.name: _info(row, closure.get(row.name, frozenset())) for row in rows}
            # Swapped whole, never mutated: the gateway reads these without a lock.
            self._principals, self._by_id, self._tokens, self._grants = principals, by_id, live_tokens, grants
            self._members = {name: tuple(sorted(members)) for name, members in direct.items()}
            self.revision += 1

    def authenticate_personal(self, token: str) -> Caller | None:
        """The caller a personal access token belongs to, or None (unknown, revoked, expired,
        or its principal deactivated)."""
        # Looked up by digest, not compared byte by byte: how long the lookup takes depends on
        # the SHA-256 of what was sent, which tells an attacker nothing about a stored token
        # (that is the constant-time property a direct comparison would need compare_digest for).
        entry = self._tokens.get(tokens.hash_token(token))
        if entry is None:
            return None
        name, token_id, expires_at = entry
        if expires_at is not None and now_ms() >= expires_at:
            return None
        principal = self._principals.get(name)
        if principal is None or not principal.active:
            return None
        return principal.caller(via="pat", token_id=token_id, expires_at=expires_at)

    def principal(self, name: str) -> PrincipalInfo:
        """A user, service principal or group by name (404 if none)."""
        info = self._principals.get(name)
        if info is None:
            raise NotFound(f"No user, service principal or group named {name!r}")
        return info

    def by_id(self, principal_id: int) -> PrincipalInfo:
        name = self._by_id.get(principal_id)
        if name is None or name not in self._principals:
            raise NotFound(f"No user, service principal or group with id {principal_id}")
        return self._principals[name]

    def active_principal(self, name: str) -> PrincipalInfo | None:
        """A user or service principal that may sign in, or None."""
        info = self._principals.get(name)
        return info if info is not None and info.active and info.kind in KINDS else None

    def endpoint_level(self, endpoint: str, principal: str) -> PermissionLevel:
        """The strongest level among the principal's own grant and its groups' (a few dict
        lookups: this runs on every request)."""
        grants = self._grants.get(endpoint)
        if not grants:
            return PermissionLevel.NO_PERMISSIONS
        level = grants.get(principal, PermissionLevel.NO_PERMISSIONS)
        info = self._principals.get(principal)
        for group in info.groups if info is not None else ():
            other = grants.get(group)
            if other is not None and other.rank > level.rank:
                level = other
        return level

    def endpoint_grants(self, endpoint: str) -> dict[str, PermissionLevel]:
        """Direct grants on the endpoint: principal or group name -> level."""
        return dict(self._grants.get(endpoint, {}))

    # ---- principals and groups ------------------------------------------------------------

    def create_principal(self, name: str, kind: str, *, is_admin: bool = False, display_name: str | None = None,
                         created_by: str | None = None, external_id: str | None = None,
                         attributes: dict | None = None, active: bool = True) -> PrincipalInfo:
        """A new user, service principal or group (``kind``); ``is_admin`` puts a user or
        service principal in ``admins``."""
        if kind not in (*KINDS, GROUP):
            raise InvalidParameter(f"Unknown principal kind {kind!r}; expected one of {', '.join((*KINDS, GROUP))}")
        _check_name(name, kind)
        if name in self._principals:
            raise AlreadyExists(f"A user, service principal or group named {name!r} already exists")
        is_admin = is_admin and kind in KINDS
        if self.bridge is not None and kind in KINDS:
            self.bridge.ensure_user(name, is_admin)
        # A new principal changes nobody else's memberships, so the maps gain one entry instead
        # of being rebuilt (a rebuild reads every principal and token: creating 150 users in a
        # row spent most of its time there). Under the rebuild lock, so no rebuild that read
        # before this commit can swap in maps without it.
        with self._reload_lock:
            try:
                with self.db.session() as session:
                    row = Principal(name=name, kind=kind, display_name=display_name, active=active, created_by=created_by,
                                    external_id=external_id, attributes=attributes or None, created_at=now_ms())
                    session.add(row)
                    session.flush()
                    if is_admin:
                        session.add(GroupMember(group_id=self._principals[groups.ADMINS].id, member_id=row.id))
            except IntegrityError:  # the same name created concurrently, after the check above
                raise AlreadyExists(f"A user, service principal or group named {name!r} already exists") from None
            parents = ({groups.USERS} if kind in KINDS else set()) | ({groups.ADMINS} if is_admin else set())
            member_of = frozenset(parents.union(*(self._principals[p].groups for p in parents)))
            info = _info(row, member_of)
            self._principals = {**self._principals, name: info}
            self._by_id = {**self._by_id, info.id: name}
            self.revision += 1
            if is_admin:
                self._members = {**self._members, groups.ADMINS: tuple(sorted((*self._members.get(groups.ADMINS, ()), name)))}
        if self.bridge is not None:
            for group in set(self.bridge.groups_with_roles()) & member_of:
                self.bridge.sync_group(group, self.group_members(group))
        return info

    def update_principal(self, name: str, *, new_name: Any = UNCHANGED, display_name: Any = UNCHANGED,
                         active: Any = UNCHANGED, external_id: Any = UNCHANGED, attributes: Any = UNCHANGED) -> PrincipalInfo:
        """Change what SCIM may change. Only a group may be renamed (users' and service
        principals' names are what MLflow and every grant know them by); built-in groups may not."""
        info = self.principal(name)
        if new_name is not UNCHANGED and new_name != name:
            self._check_rename(info, new_name)
        if active is not UNCHANGED and not isinstance(active, bool):
            raise InvalidParameter(f"active must be true or false, got {active!r}")
        with self.db.session() as session:
            row = session.get(Principal, info.id)
            for column, value in (("name", new_name), ("display_name", display_name), ("active", active),
                                  ("external_id", external_id), ("attributes", attributes)):
                if value is not UNCHANGED:
                    setattr(row, column, value)
        if new_name is not UNCHANGED and new_name != name and self.bridge is not None:
            self.bridge.rename_group(name, new_name)
        self.reload()
        return self._principals[name if new_name is UNCHANGED else new_name]

    def _check_rename(self, info: PrincipalInfo, new_name: str) -> None:
        if info.kind != GROUP:
            key = "userName" if info.kind == "user" else "applicationId"
            raise InvalidParameter(f"{key} cannot be changed ({info.name!r}): grants, tokens and MLflow know the "
                                   "principal by it; create a new one instead")
        if info.name in groups.BUILT_IN:
            raise InvalidParameter(f"The built-in group {info.name!r} cannot be renamed")
        _check_name(new_name, GROUP)
        if new_name in self._principals:
            raise AlreadyExists(f"A user, service principal or group named {new_name!r} already exists")

    def list_principals(self, kind: str | None = None) -> list[PrincipalInfo]:
        """Users and service principals (``kind`` None), or those of one kind (``group`` too)."""
        wanted = KINDS if kind is None else (kind,)
        return sorted((p for p in self._principals.values() if p.kind in wanted), key=lambda p: p.name)

    def delete_principal(self, name: str) -> None:
        """Removes the principal or group, its tokens, memberships and grants (MLflow's user or
        role too). Built-in groups stay."""
        info = self.principal(name)
        if info.name in groups.BUILT_IN and info.kind == GROUP:
            raise InvalidParameter(f"The built-in group {name!r} cannot be deleted")
        with self.db.session() as session:
            for table, column in ((AccessToken, AccessToken.principal_id), (EndpointGrant, EndpointGrant.principal_id),
                                  (ModelPrefixGrant, ModelPrefixGrant.principal_id)):
                session.execute(delete(table).where(column == info.id))
            session.execute(delete(GroupMember).where(or_(GroupMember.group_id == info.id, GroupMember.member_id == info.id)))
            session.execute(delete(Principal).where(Principal.id == info.id))
        if self.bridge is not None:
            if info.kind == GROUP:
                self.bridge.delete_group(name)
            else:
                self.bridge.delete_user(name)
        self._reload_and_sync()

    def direct_members(self, group: str) -> list[PrincipalInfo]:
        """Who is in the group directly (``users``: every user and service principal)."""
        info = self._group(group)
        if info.name == groups.USERS:
            return self.list_principals()
        return [self._principals[name] for name in self._members.get(group, ()) if name in self._principals]

    def direct_groups(self, name: str) -> list[PrincipalInfo]:
        """The groups ``name`` is a direct member of (``users`` for every user and service principal)."""
        info = self.principal(name)
        found = [self._principals[g] for g, members in self._members.items() if name in members]
        if info.kind in KINDS:
            found.append(self._principals[groups.USERS])
        return sorted(found, key=lambda g: g.name)

    def change_members(self, group: str, *, add: list[str] = (), remove: list[str] = (), replace_all: bool = False,
                       keep_admin: str | None = None) -> None:
        """Add and remove direct members of a group (``replace_all``: the members become
        exactly ``add``). ``keep_admin`` names a principal who must still be an admin after
        the change (the admin making it), so nobody locks themselves out by accident.

        Raises:
            NotFound: the group or a member does not exist.
            InvalidParameter: a built-in ``users`` change, a cycle, or ``keep_admin`` losing admin.
        """
        before = self._admin_flags()
        with self._change_lock:  # read, check and write as one: two concurrent adds must not both insert
            self._change_members(group, list(add), list(remove), replace_all, keep_admin)
        self._sync_mlflow_since(before)

    def _change_members(self, group: str, add: list[str], remove: list[str], replace_all: bool,
                        keep_admin: str | None) -> None:
        info = self._group(group)
        if info.name == groups.USERS:
            raise InvalidParameter("The built-in group 'users' always holds every user and service principal; "
                                   "its members cannot be changed")
        current = set(self._members.get(group, ()))
        added = [self.principal(name) for name in add]
        removed = {self.principal(name).name for name in remove}
        closure = {n: p.groups for n, p in self._principals.items()}
        for member in added:
            if member.kind == GROUP:
                groups.check_no_cycle(group, member.name, closure)
        wanted = ({m.name for m in added} if replace_all else (current | {m.name for m in added})) - removed
        if keep_admin is not None:
            self._check_keeps_admin(group, wanted, keep_admin)
        with self.db.session() as session:
            ids = {name: self._principals[name].id for name in wanted | current}
            for name in current - wanted:
                session.execute(delete(GroupMember).where(GroupMember.group_id == info.id,
                                                          GroupMember.member_id == ids[name]))
            for name in wanted - current:
                session.add(GroupMember(group_id=info.id, member_id=ids[name]))
        self.reload()  # before the lock is released: the next change reads this one's members

    def _check_keeps_admin(self, group: str, wanted: set[str], admin: str) -> None:
        direct = {name: set(members) for name, members in self._members.items()}
        direct[group] = set(wanted)
        closure = groups.memberships(direct, [admin])
        if groups.ADMINS not in closure.get(admin, frozenset()):
            raise InvalidParameter(f"This change would take away your own admin rights ({admin!r} would no longer "
                                   "belong to 'admins'); let another admin make it")

    def _group(self, name: str) -> PrincipalInfo:
        info = self.principal(name)
        if info.kind != GROUP:
            raise NotFound(f"No group named {name!r} ({name!r} is a {info.kind.replace('_', ' ')})")
        return info

    def group_members(self, group: str) -> set[str]:
        """The users and service principals in the group, nested groups expanded."""
        return {p.name for p in self._principals.values() if p.kind in KINDS and group in p.groups}

    def sync_mlflow(self) -> None:
        """At start: MLflow's users and group roles as agentwharf's principals and groups say
        (a group deleted while MLflow's store was out of reach loses its role here)."""
        if self.bridge is None:
            return
        for info in self.list_principals():
            self.bridge.ensure_user(info.name, info.is_admin)
        for group in self.bridge.groups_with_roles():
            info = self._principals.get(group)
            if info is None or info.kind != GROUP:
                self.bridge.delete_group(group)
            else:
                self.bridge.sync_group(group, self.group_members(group))

    def _reload_and_sync(self) -> None:
        """Rebuild the maps and bring MLflow's admin flags and group roles in step with them."""
        before = self._admin_flags()
        self.reload()
        self._sync_mlflow_since(before)

    def _admin_flags(self) -> dict[str, bool]:
        return {name: info.is_admin for name, info in self._principals.items()}

    def _sync_mlflow_since(self, before: dict[str, bool]) -> None:
        """MLflow's admin flags that changed since ``before``, and every group role's members."""
        if self.bridge is None:
            return
        for name, info in self._principals.items():
            if info.kind in KINDS and name in before and before[name] != info.is_admin:
                self.bridge.ensure_user(name, info.is_admin)
        for group in self.bridge.groups_with_roles():
            if group in self._principals:
                self.bridge.sync_group(group, self.group_members(group))

    # ---- personal access tokens -----------------------------------------------------------

    def create_token(self, principal: str, lifetime_seconds: int | None, comment: str | None) -> tuple[str, TokenInfo]:
        """A new token for ``principal``: its value (shown once, never stored) and its info."""
        info = self.principal(principal)
        if info.kind not in KINDS:
            raise InvalidParameter(f"{principal!r} is a group; tokens belong to users and service principals")
        if not info.active:
            raise InvalidParameter(f"{principal!r} is deactivated")
        if lifetime_seconds is not None:
            if not isinstance(lifetime_seconds, int) or isinstance(lifetime_seconds, bool) or lifetime_seconds <= 0:
                raise InvalidParameter(f"lifetime_seconds must be a positive whole number of seconds, got {lifetime_seconds!r}")
            if lifetime_seconds > MAX_TOKEN_LIFETIME_SECONDS:
                raise InvalidParameter(f"lifetime_seconds may be at most {MAX_TOKEN_LIFETIME_SECONDS} (ten years)")
        value = tokens.new_personal_token()
        created = now_ms()
        expires = created + lifetime_seconds * 1000 if lifetime_seconds is not None else None
        token_id = tokens.new_token_id()
        with self._reload_lock:  # one entry more, not a rebuild (see create_principal)
            with self.db.session() as session:
                session.add(AccessToken(id=token_id, principal_id=info.id, token_hash=tokens.hash_token(value),
                                        comment=comment, created_at=created, expires_at=expires))
            self._tokens = {**self._tokens, tokens.hash_token(value): (principal, token_id, expires)}
            self.revision += 1
        return value, TokenInfo(token_id, principal, comment, created, expires, False, info.id)

    def list_tokens(self, principal: str | None = None) -> list[TokenInfo]:
        with self.db.session() as session:
            query = select(AccessToken, Principal.name).join(Principal, Principal.id == AccessToken.principal_id)
            if principal is not None:
                query = query.where(Principal.name == principal)
            rows = session.execute(query.order_by(AccessToken.created_at)).all()
            return [_token_info(t, name) for t, name in rows]

    def token(self, token_id: str) -> TokenInfo:
        with self.db.session() as session:
            row = session.execute(select(AccessToken, Principal.name).join(Principal, Principal.id == AccessToken.principal_id)
                                  .where(AccessToken.id == token_id)).first()
        if row is None:
            raise NotFound(f"No token with id {token_id!r}")
        return _token_info(*row)

    def token_owner(self, token_id: str) -> str:
        return self.token(token_id).principal

    def set_token_comment(self, token_id: str, comment: str | None) -> TokenInfo:
        with self.db.session() as session:
            token = session.get(AccessToken, token_id)
            if token is None:
                raise NotFound(f"No token with id {token_id!r}")
            token.comment = comment
        return self.token(token_id)

    def revoke_token(self, token_id: str) -> None:
        with self.db.session() as session:
            token = session.get(AccessToken, token_id)
            if token is None:
                raise NotFound(f"No token with id {token_id!r}")
            if token.revoked_at is None:
                token.revoked_at = now_ms()
        self.reload()

    # ---- endpoint grants ------------------------------------------------------------------

    def set_endpoint_level(self, endpoint: str, principal: str, level: PermissionLevel,
                           experiment_id: str | None = None) -> None:
        """Grant ``level`` to a principal or group (NO_PERMISSIONS removes the grant), and
        mirror it onto the endpoint's MLflow experiment, where its traces are."""
        info = self.principal(principal)
        with self.db.session() as session:
            session.execute(delete(EndpointGrant).where(EndpointGrant.endpoint_name == endpoint,
                                                        EndpointGrant.principal_id == info.id))
            if level is not PermissionLevel.NO_PERMISSIONS:
                session.add(EndpointGrant(endpoint_name=endpoint, principal_id=info.id, level=level.value))
        if self.bridge is not None and experiment_id:
            if info.kind == GROUP:
                self.bridge.set_group_experiment_access(experiment_id, principal, level, self.group_members(principal))
            else:
                self.bridge.set_experiment_access(experiment_id, principal, level)
        self.reload()

    def drop_endpoint_grants(self, endpoint: str) -> None:
        """When an endpoint is deleted; a later endpoint of the same name starts with none."""
        with self.db.session() as session:
            session.execute(delete(EndpointGrant).where(EndpointGrant.endpoint_name == endpoint))
        self.reload()


def _check_name(name: Any, kind: str) -> None:
    pattern = _GROUP_NAME if kind == GROUP else _NAME
    if not isinstance(name, str) or not pattern.fullmatch(name):
        spaces = " (inner spaces allowed)" if kind == GROUP else ""
        raise InvalidParameter(f"Invalid principal name {name!r}: use 1-128 letters, digits and . _ @ + -{spaces}, "
                               "starting with a letter or digit")


def _token_info(token: AccessToken, owner: str) -> TokenInfo:
    return TokenInfo(token.id, owner, token.comment, token.created_at, token.expires_at, token.revoked_at is not None,
                     token.principal_id)


def token_lifetime_from(value) -> int | None:
    """``lifetime_seconds`` as Databricks clients send it: absent, null or -1 mean no expiry."""
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return value  # not a number: create_token says so
    if value is None or value == -1:
        return None
    return value

