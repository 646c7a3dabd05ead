"""Who is calling, as the platform resolved it from the request's bearer token."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Caller:
    name: str
    #: ``user`` or ``service_principal``.
    kind: str
    is_admin: bool
    #: How the caller authenticated: ``pat`` (personal access token), ``system`` (a model's
    #: declared-resources credential), ``obo`` (on behalf of a user), ``load`` (a worker
    #: reading its model) or ``monitor`` (online scoring's judges).
    via: str = "pat"
    token_id: str | None = None
    #: OBO tokens: the API scopes the model declared.
    scopes: frozenset[str] = frozenset()
    #: System credentials: the serving endpoints the model declared.
    endpoints: frozenset[str] = frozenset()
    #: Milliseconds since the epoch; None for tokens without expiry.
    expires_at: int | None = None

    @property
    def is_personal(self) -> bool:
        """Signed in with their own token (not a credential minted for a worker)."""
        return self.via == "pat"


@dataclass(frozen=True)
class PrincipalInfo:
    id: int
    name: str
    kind: str
    display_name: str | None
    #: Belongs to ``admins``, directly or through another group (never true of a group).
    is_admin: bool
    active: bool
    created_at: int
    external_id: str | None = None
    attributes: dict = field(default_factory=dict, compare=False)
    #: Every group it belongs to, directly or through other groups.
    groups: frozenset[str] = frozenset()

    def caller(self, **extra) -> Caller:
        return Caller(name=self.name, kind=self.kind, is_admin=self.is_admin, **extra)
