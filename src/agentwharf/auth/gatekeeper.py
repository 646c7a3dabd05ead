"""The platform's front door: who is calling (401 if nobody) and what they may reach (403).

Cost on the hot path: one SHA-256 of the token and dictionary lookups (personal tokens), or
one HMAC (tokens minted for workers). No password hashing, no database round trip.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable

from agentwharf.auth import tokens
from agentwharf.auth.caller import Caller
from agentwharf.auth.identities import IdentityService
from agentwharf.auth.levels import PermissionLevel
from agentwharf.auth.scopes import SERVING_ENDPOINTS
from agentwharf.errors import PermissionDenied, Unauthenticated

COOKIE = "agentwharf_token"
LOADER = "agentwharf-loader"
#: Who online scoring's judges call LLM endpoints as (see ``tokens.MONITOR_PREFIX``).
MONITOR = "agentwharf-monitor"
#: Methods that cannot change anything (RFC 9110 9.2.1); every other one is checked for CSRF.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _basic_password(credentials: str) -> str | None:
    try:
        _user, _, password = base64.b64decode(credentials.strip(), validate=True).decode("latin-1").partition(":")
    except (binascii.Error, ValueError):
        return None
    return password or None


def bearer_token(scope: dict) -> str | None:
    """The token from ``Authorization: Bearer``, or the browser's cookie (the MLflow UI).

    HTTP Basic with the token as the password (any user name) is the same token: MLflow's
    clients send Basic when ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` are set,
    and its ``gateway:/`` judges send nothing else (as Databricks takes ``token:<PAT>``)."""
    cookie = None
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            if scheme.lower() == "basic" and credentials.strip():
                return _basic_password(credentials)
            return None
        if key == b"cookie":
            cookie = value.decode("latin-1")
    if cookie:
        for part in cookie.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                return value
    return None


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def signed_in_by_cookie(scope: dict) -> bool:
    """The request's token is the browser's cookie (no ``Authorization`` header)."""
    return _header(scope, b"authorization") is None and bearer_token(scope) is not None


def same_origin(scope: dict) -> bool:
    """Whether a browser request comes from the platform's own pages: its ``Origin`` (or, when
    a browser sent none, its ``Referer``) names the host the request was sent to. Browsers send
    ``Origin`` on every POST, PUT, PATCH and DELETE, and no page can forge it."""
    host = _header(scope, b"host")
    source = _header(scope, b"origin") or _header(scope, b"referer")
    if not host or not source or source == "null":
        return False
    scheme, _, rest = source.partition("://")
    return scheme in ("http", "https") and rest.split("/", 1)[0].lower() == host.lower()


def cross_site_cookie_request(scope: dict) -> bool:
    """A state-changing request carried by the sign-in cookie that did not come from the
    platform's own pages: refused, whatever route it is for (CSRF). The cookie is
    ``SameSite=Strict`` too, so browsers do not send it from other sites at all; this check
    also covers same-site neighbours (other ports on the host) and old browsers."""
    return scope["method"] not in SAFE_METHODS and signed_in_by_cookie(scope) and not same_origin(scope)


class Gatekeeper:
    def __init__(self, identities: IdentityService, signer: tokens.TokenSigner,
                 entity_live: Callable[[str, str, str], bool]):
        self.identities = identities
        self.signer = signer
        #: (endpoint, entity, token) -> whether that entity is served now *with this very
        #: credential*: a system credential dies with the model version it was minted for.
        self.entity_live = entity_live
        #: This platform run's id: monitor credentials minted by another run are refused.
        self.boot_id: str | None = None

    def authenticate(self, scope: dict) -> Caller:
        """Raises:
            Unauthenticated: no token, or one that is unknown, revoked, expired or forged.
        """
        token = bearer_token(scope)
        if token is None:
            raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'")
        if token.startswith(tokens.PAT_PREFIX):
            caller = self.identities.authenticate_personal(token)
            if caller is None:
                raise Unauthenticated("The token is invalid, expired or revoked")
            return caller
        return self._signed(token)

    def _signed(self, token: str) -> Caller:
        try:
            prefix, claims = self.signer.verify(token)
        except tokens.InvalidSignedToken as error:
            raise Unauthenticated(f"The token is invalid: {error}") from None
        expires = int(claims["exp"] * 1000) if "exp" in claims else None
        if prefix == tokens.SYSTEM_PREFIX:
            endpoint, entity = claims.get("ep", ""), claims.get("ent", "")
            if not self.entity_live(endpoint, entity, token):
                raise Unauthenticated("The system credential belongs to a model that is no longer served")
            return Caller(name=f"system:{endpoint}/{entity}", kind="service_principal", is_admin=False, via="system",
                          endpoints=frozenset(claims.get("res", ())))
        if prefix == tokens.MONITOR_PREFIX:
            if self.boot_id is None or claims.get("boot") != self.boot_id:
                raise Unauthenticated("The monitor credential belongs to an earlier run of the platform")
            return Caller(name=MONITOR, kind="service_principal", is_admin=False, via="monitor")
        if prefix == tokens.OBO_PREFIX:
            principal = self.identities.active_principal(claims.get("sub", ""))
            if principal is None:
                raise Unauthenticated("The on-behalf-of token's user no longer exists or is deactivated")
            return principal.caller(via="obo", scopes=frozenset(claims.get("sc", ())), expires_at=expires)
        return Caller(name=LOADER, kind="service_principal", is_admin=False, via="load", expires_at=expires)

    def endpoint_level(self, caller: Caller, endpoint: str) -> PermissionLevel:
        if caller.via == "system":
            return PermissionLevel.CAN_QUERY if endpoint in caller.endpoints else PermissionLevel.NO_PERMISSIONS
        if caller.via == "load":
            return PermissionLevel.NO_PERMISSIONS
        if caller.via == "monitor":
            # Judges query LLM endpoints (the gateway refuses agents to it); who may point a
            # judge at an endpoint is checked when the scorer is registered (quality.guard).
            return PermissionLevel.CAN_QUERY
        level = PermissionLevel.CAN_MANAGE if caller.is_admin else self.identities.endpoint_level(endpoint, caller.name)
        if caller.via == "obo":
            # Never more than the user has, and only querying, and only if the scope was declared.
            if SERVING_ENDPOINTS not in caller.scopes:
                return PermissionLevel.NO_PERMISSIONS
            return min(level, PermissionLevel.CAN_QUERY, key=lambda lv: lv.rank)
        return level

    def require_endpoint(self, caller: Caller, endpoint: str, needed: PermissionLevel) -> None:
        """Raises:
            PermissionDenied: the caller's level on the endpoint is below ``needed``.
        """
        if not self.endpoint_level(caller, endpoint).allows(needed):
            raise PermissionDenied(f"{caller.name!r} lacks {needed.value} on serving endpoint {endpoint!r}")

    @staticmethod
    def require_personal(caller: Caller, what: str) -> None:
        """Credentials minted for workers query endpoints; they never manage the platform."""
        if not caller.is_personal:
            raise PermissionDenied(f"A {caller.via} credential cannot be used to {what}")

    @staticmethod
    def require_admin(caller: Caller, what: str) -> None:
        if not (caller.is_personal and caller.is_admin):
            raise PermissionDenied(f"Only an admin may {what}")
