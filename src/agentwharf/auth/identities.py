"""Principals, personal access tokens and grants: stored in agentwharf's tables, read from memory.

Every request checks a token and usually a grant, so both are answered from in-process maps.
The maps are exact, not merely cached: every change goes through this service, in this
process, which updates them after its transaction commits.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from sqlalchemy import delete, select

from agentwharf.auth import tokens
from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel, parse_model_permission
from agentwharf.auth.mlflow_bridge import MlflowAuthBridge
from agentwharf.errors import AlreadyExists, InvalidParameter, NotFound
from agentwharf.store.database import Database
from agentwharf.store.models import AccessToken, EndpointGrant, ModelPrefixGrant, Principal, now_ms

KINDS = ("user", "service_principal")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
#: A prefix grant covers ``catalog`` or ``catalog.schema``.
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?")
MAX_TOKEN_LIFETIME_SECONDS = 10 * 365 * 24 * 3600


@dataclass(frozen=True)
class TokenInfo:
    token_id: str
    principal: str
    comment: str | None
    creation_time: int
    expiry_time: int | None
    revoked: bool

    def to_json(self) -> dict:
        # Databricks' shape (``token_info``); -1 is its "never expires".
        return {"token_id": self.token_id, "owner": self.principal, "comment": self.comment or "",
                "creation_time": self.creation_time, "expiry_time": self.expiry_time if self.expiry_time is not None else -1,
                "revoked": self.revoked}


@dataclass(frozen=True)
class PrincipalInfo:
    id: int
    name: str
    kind: str
    display_name: str | None
    is_admin: bool
    active: bool
    created_at: int

    def caller(self, **extra) -> Caller:
        return Caller(name=self.name, kind=self.kind, is_admin=self.is_admin, **extra)


def _info(row: Principal) -> PrincipalInfo:
    return PrincipalInfo(row.id, row.name, row.kind, row.display_name, row.is_admin, row.active, row.created_at)


class IdentityService:
    def __init__(self, db: Database, bridge: MlflowAuthBridge | None):
        self.db = db
        self.bridge = bridge
        self._lock = threading.Lock()
        self._principals: dict[str, PrincipalInfo] = {}
        #: token hash -> (principal name, token id, expires_at ms or None)
        self._tokens: dict[str, tuple[str, str, int | None]] = {}
        #: endpoint name -> {principal name: level}
        self._grants: dict[str, dict[str, PermissionLevel]] = {}
        self.reload()

    # ---- in-memory view -------------------------------------------------------------------

    def reload(self) -> None:
        with self.db.session() as session:
            principals = {row.name: _info(row) for row in session.scalars(select(Principal))}
            by_id = {info.id: info.name for info in principals.values()}
            live_tokens = {}
            for token in session.scalars(select(AccessToken).where(AccessToken.revoked_at.is_(None))):
                live_tokens[token.token_hash] = (by_id[token.principal_id], token.id, token.expires_at)
            grants: dict[str, dict[str, PermissionLevel]] = {}
            for grant in session.scalars(select(EndpointGrant)):
                grants.setdefault(grant.endpoint_name, {})[by_id[grant.principal_id]] = PermissionLevel(grant.level)
        with self._lock:
            self._principals, self._tokens, self._grants = principals, live_tokens, grants

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
        info = self._principals.get(name)
        if info is None:
            raise NotFound(f"No user or service principal named {name!r}")
        return info

    def active_principal(self, name: str) -> PrincipalInfo | None:
        info = self._principals.get(name)
        return info if info is not None and info.active else None

    def endpoint_level(self, endpoint: str, principal: str) -> PermissionLevel:
        return self._grants.get(endpoint, {}).get(principal, PermissionLevel.NO_PERMISSIONS)

    def endpoint_grants(self, endpoint: str) -> dict[str, PermissionLevel]:
        return dict(self._grants.get(endpoint, {}))

    # ---- principals -----------------------------------------------------------------------

    def create_principal(self, name: str, kind: str, *, is_admin: bool = False, display_name: str | None = None,
                         created_by: str | None = None) -> PrincipalInfo:
        if kind not in KINDS:
            raise InvalidParameter(f"Unknown principal kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidParameter(f"Invalid principal name {name!r}: use 1-128 letters, digits and . _ @ + -, "
                                   "starting with a letter or digit")
        if name in self._principals:
            raise AlreadyExists(f"A user or service principal named {name!r} already exists")
        if self.bridge is not None:
            self.bridge.ensure_user(name, is_admin)
        with self.db.session() as session:
            row = Principal(name=name, kind=kind, is_admin=is_admin, display_name=display_name, active=True,
                            created_by=created_by)
            session.add(row)
            session.flush()
            info = _info(row)
        self.reload()
        return info

    def list_principals(self, kind: str | None = None) -> list[PrincipalInfo]:
        return sorted((p for p in self._principals.values() if kind is None or p.kind == kind), key=lambda p: p.name)

    def delete_principal(self, name: str) -> None:
        """Removes the principal, its tokens and its endpoint grants (MLflow's user too)."""
        info = self.principal(name)
        with self.db.session() as session:
            session.execute(delete(AccessToken).where(AccessToken.principal_id == info.id))
            session.execute(delete(EndpointGrant).where(EndpointGrant.principal_id == info.id))
            session.execute(delete(ModelPrefixGrant).where(ModelPrefixGrant.principal_id == info.id))
            session.execute(delete(Principal).where(Principal.id == info.id))
        if self.bridge is not None:
            self.bridge.delete_user(name)
        self.reload()

    # ---- personal access tokens -----------------------------------------------------------

    def create_token(self, principal: str, lifetime_seconds: int | None, comment: str | None) -> tuple[str, TokenInfo]:
        """A new token for ``principal``: its value (shown once, never stored) and its info."""
        info = self.principal(principal)
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
        with self.db.session() as session:
            session.add(AccessToken(id=token_id, principal_id=info.id, token_hash=tokens.hash_token(value),
                                    comment=comment, created_at=created, expires_at=expires))
        with self._lock:
            self._tokens[tokens.hash_token(value)] = (principal, token_id, expires)
        return value, TokenInfo(token_id, principal, comment, created, expires, False)

    def list_tokens(self, principal: str | None = None) -> list[TokenInfo]:
        with self.db.session() as session:
            query = select(AccessToken, Principal.name).join(Principal, Principal.id == AccessToken.principal_id)
            if principal is not None:
                query = query.where(Principal.name == principal)
            rows = session.execute(query.order_by(AccessToken.created_at)).all()
            return [TokenInfo(t.id, name, t.comment, t.created_at, t.expires_at, t.revoked_at is not None) for t, name in rows]

    def token_owner(self, token_id: str) -> str:
        with self.db.session() as session:
            row = session.execute(select(Principal.name).join(AccessToken, AccessToken.principal_id == Principal.id)
                                  .where(AccessToken.id == token_id)).first()
        if row is None:
            raise NotFound(f"No token with id {token_id!r}")
        return row[0]

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
        """Grant ``level`` (NO_PERMISSIONS removes the grant), and mirror it onto the endpoint's
        MLflow experiment, where its traces are."""
        info = self.principal(principal)
        with self.db.session() as session:
            session.execute(delete(EndpointGrant).where(EndpointGrant.endpoint_name == endpoint,
                                                        EndpointGrant.principal_id == info.id))
            if level is not PermissionLevel.NO_PERMISSIONS:
                session.add(EndpointGrant(endpoint_name=endpoint, principal_id=info.id, level=level.value))
        if self.bridge is not None and experiment_id:
            self.bridge.set_experiment_access(experiment_id, principal, level)
        with self._lock:
            levels = dict(self._grants.get(endpoint, {}))
            if level is PermissionLevel.NO_PERMISSIONS:
                levels.pop(principal, None)
            else:
                levels[principal] = level
            self._grants = {**self._grants, endpoint: levels}

    def drop_endpoint_grants(self, endpoint: str) -> None:
        """When an endpoint is deleted; a later endpoint of the same name starts with none."""
        with self.db.session() as session:
            session.execute(delete(EndpointGrant).where(EndpointGrant.endpoint_name == endpoint))
        with self._lock:
            self._grants = {name: levels for name, levels in self._grants.items() if name != endpoint}

    # ---- registered-model grants (MLflow decides; prefixes are copied onto each model) -------

    def grant_model(self, model_or_prefix: str, principal: str, permission: str | None, model_names: list[str]) -> None:
        """Per model when ``model_or_prefix`` is a full ``catalog.schema.model`` or MLflow name,
        else a prefix grant (``catalog`` or ``catalog.schema``), applied to ``model_names`` now
        and to matching models created later. ``permission`` None revokes."""
        info = self.principal(principal)
        if permission is not None:
            permission = parse_model_permission(permission)
        if self.is_prefix(model_or_prefix):
            with self.db.session() as session:
                session.execute(delete(ModelPrefixGrant).where(ModelPrefixGrant.prefix == model_or_prefix,
                                                               ModelPrefixGrant.principal_id == info.id))
                if permission is not None:
                    session.add(ModelPrefixGrant(prefix=model_or_prefix, principal_id=info.id, permission=permission))
            targets = [name for name in model_names if name.startswith(model_or_prefix + ".")]
        else:
            targets = [model_or_prefix]
        if self.bridge is not None:
            for name in targets:
                self.bridge.set_model_permission(name, principal, permission)

    @staticmethod
    def is_prefix(name: str) -> bool:
        return bool(_PREFIX.fullmatch(name)) and name.count(".") <= 1

    def prefix_grants(self) -> list[tuple[str, str, str]]:
        with self.db.session() as session:
            rows = session.execute(select(ModelPrefixGrant.prefix, Principal.name, ModelPrefixGrant.permission)
                                   .join(Principal, Principal.id == ModelPrefixGrant.principal_id)).all()
        return [tuple(row) for row in rows]

    def apply_prefix_grants(self, model_name: str) -> None:
        """A registered model was just created: give it the grants of every prefix it is under."""
        if self.bridge is None:
            return
        for prefix, principal, permission in self.prefix_grants():
            if model_name.startswith(prefix + "."):
                self.bridge.set_model_permission(model_name, principal, permission)

    def model_permission(self, model_name: str, principal: str) -> str | None:
        if self.bridge is None:
            return None
        return self.bridge.model_permission(model_name, principal)


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

