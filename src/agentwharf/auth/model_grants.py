"""Grants on registered models: MLflow decides, agentwharf says what is granted.

Per-model grants are MLflow's own (its basic-auth store); a prefix grant (``catalog`` or
``catalog.schema``) is agentwharf's, kept in ``aw_model_prefix_grants`` and copied onto each
matching model, now and as models are created. A grant to a group is the permission of the
group's MLflow role (see ``auth.mlflow_bridge``), so MLflow gives each member the strongest of its
own grant and its groups'.

A part of ``IdentityService`` (it mixes this in), kept apart because it is about models, not
about who is who.
"""

from __future__ import annotations

import re

from sqlalchemy import delete, select

from agentwharf.auth import groups
from agentwharf.auth.caller import PrincipalInfo
from agentwharf.auth.levels import parse_model_permission
from agentwharf.store.models import ModelPrefixGrant, Principal

#: A prefix grant covers ``catalog`` or ``catalog.schema``.
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)?")


class ModelGrants:
    """Needs ``db``, ``bridge``, ``principal()``, ``group_members()`` and ``_principals``
    from the class it is mixed into."""

    def grant_model(self, model_or_prefix: str, principal: str, permission: str | None, model_names: list[str]) -> None:
        """Per model when ``model_or_prefix`` is a full ``catalog.schema.model`` or MLflow name,
        else a prefix grant (``catalog`` or ``catalog.schema``), applied to ``model_names`` now
        and to matching models created later. ``principal`` may be a group. ``permission`` None revokes."""
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
        for name in targets:
            self._mirror_model_grant(name, info, permission)

    def _mirror_model_grant(self, model_name: str, info: PrincipalInfo, permission: str | None) -> None:
        if self.bridge is None:
            return
        if info.kind == groups.KIND:
            self.bridge.set_group_model_permission(model_name, info.name, permission, self.group_members(info.name))
        else:
            self.bridge.set_model_permission(model_name, info.name, permission)

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
        for prefix, principal, permission in self.prefix_grants():
            if model_name.startswith(prefix + ".") and principal in self._principals:
                self._mirror_model_grant(model_name, self._principals[principal], permission)

    def model_grant(self, model_name: str, principal: str) -> str | None:
        """The permission granted on the model to exactly this principal or group."""
        if self.bridge is None:
            return None
        if self.principal(principal).kind == groups.KIND:
            return self.bridge.group_model_permission(model_name, principal)
        return self.bridge.model_permission(model_name, principal)

    def model_permission(self, model_name: str, principal: str) -> str | None:
        """What the principal may do with the model: the strongest of its own grant and its groups'."""
        if self.bridge is None:
            return None
        return self.bridge.effective_model_permission(model_name, principal)
