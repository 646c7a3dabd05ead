"""Keeps MLflow's basic-auth store in step with agentwharf's principals, groups and grants.

MLflow decides access to its own resources; this module only tells it who exists and which
grants follow from agentwharf's (an endpoint's reviewers read its experiment, a prefix grant
covers each registered model under the prefix). It writes MLflow's auth database through
MLflow's own store class, never with SQL of its own.

Groups are MLflow *roles*. MLflow 3.17 keeps every grant on a role (a user's own grants sit on
a hidden per-user role) and resolves a user's permission on a resource as the strongest over
all the roles assigned to them, which is exactly "a member gets the strongest level among their
own and their groups'". So a group's grant is a permission of the group's role, and the
group's members, expanded through nested groups, are the users assigned to that role; a change
of membership changes assignments, never the grants themselves. A group gets a role only once
something is granted to it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from agentwharf.auth.levels import PermissionLevel

log = logging.getLogger("agentwharf.auth")

#: What an endpoint permission level lets a principal do in the endpoint's MLflow experiment
#: (where its traces are): reviewers read traces and give feedback (EDIT lets MLflow accept
#: assessments), managers manage. CAN_VIEW and CAN_QUERY see no traces.
EXPERIMENT_PERMISSION = {
    PermissionLevel.CAN_REVIEW: "EDIT",
    PermissionLevel.CAN_MANAGE: "MANAGE",
}
#: Role names of agentwharf's groups (MLflow reserves the ``__user_`` prefix for its own).
ROLE_PREFIX = "agentwharf-group:"
#: A password hash no password matches. Callers authenticate to agentwharf, which vouches for
#: them to MLflow (auth.mlflow_plugin); MLflow never checks a password here. Hashing a random
#: one instead cost 0.2 s of CPU per user (werkzeug's scrypt), which made creating users slow.
_UNUSABLE_PASSWORD_HASH = "!agentwharf: no password; the platform vouches for this user"
_MODEL = "registered_model"
_EXPERIMENT = "experiment"


def _write_ahead_logging(engine) -> None:
    """MLflow's server and the platform write the auth database from two processes. In its
    default rollback-journal mode every commit cost several fsyncs (30 ms to create a user
    here); write-ahead logging costs one and lets readers go on while one writes. The mode is
    kept in the file, so MLflow's own connections use it too."""
    from sqlalchemy.exc import OperationalError

    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    except OperationalError as error:  # busy: stays in its old mode, which works, only slower
        log.warning("could not switch MLflow's auth database to write-ahead logging: %s", error)


class MlflowAuthBridge:
    @staticmethod
    def import_mlflow_store() -> None:
        """Import MLflow's auth store (and with it MLflow's server package: ~2-3 s), touching no
        database: the platform does it while MLflow's server starts, before the bridge opens."""
        import mlflow.server.auth.db.models  # noqa: F401
        import mlflow.server.auth.sqlalchemy_store  # noqa: F401

    def __init__(self, auth_database_uri: str):
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

        self.store = SqlAlchemyStore()
        self.store.init_db(auth_database_uri)
        if auth_database_uri.startswith("sqlite"):
            _write_ahead_logging(self.store.engine)
        self.workspace = self.store._get_active_workspace_name()
        #: group name -> MLflow role id, for the groups that have one.
        self._roles = {role.name[len(ROLE_PREFIX):]: role.id for role in self.store.list_roles([self.workspace])
                       if role.name.startswith(ROLE_PREFIX)}

    # ---- users ------------------------------------------------------------------------

    def ensure_user(self, name: str, is_admin: bool) -> None:
        """MLflow's user of the same name, with the platform's admin flag."""
        if self.store.has_user(name, use_primary=True):
            self.store.update_user(name, is_admin=is_admin)
            return
        from mlflow.server.auth.db.models import SqlUser

        with self.store.ManagedSessionMaker(read_only=False) as session:
            session.add(SqlUser(username=name, password_hash=_UNUSABLE_PASSWORD_HASH, is_admin=is_admin))

    def delete_user(self, name: str) -> None:
        if self.store.has_user(name, use_primary=True):
            self.store.delete_user(name)  # its role assignments go with it

    def set_experiment_access(self, experiment_id: str, username: str, level: PermissionLevel | None) -> None:
        permission = EXPERIMENT_PERMISSION.get(level) if level is not None else None
        self._set(username, _EXPERIMENT, experiment_id, permission)

    def set_model_permission(self, model_name: str, username: str, permission: str | None) -> None:
        self._set(username, _MODEL, model_name, permission)

    def model_permission(self, model_name: str, username: str) -> str | None:
        """The user's own grant on the model (not what their groups add)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.store.get_registered_model_permission(model_name, username).permission
        except MlflowException:
            return None

    def effective_model_permission(self, model_name: str, username: str) -> str | None:
        """What MLflow will let the user do with the model: the strongest of their own grant
        and their groups' (admins aside, who may do anything)."""
        from mlflow.exceptions import MlflowException

        try:
            user = self.store.get_user(username)
        except MlflowException:
            return None
        permission = self.store.get_role_permission_for_resource(user.id, _MODEL, model_name, self.workspace)
        return None if permission is None or permission.name in ("NO_PERMISSIONS", "DENY") else permission.name

    def _set(self, username: str, resource_type: str, resource_id: str, permission: str | None) -> None:
        from mlflow.exceptions import MlflowException

        if permission is None:
            try:
                self.store.revoke_user_resource_permission(username, resource_type, resource_id)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
            return
        self.store.grant_user_permission(username, resource_type, resource_id, permission)

    # ---- groups (roles) -----------------------------------------------------------------

    def set_group_experiment_access(self, experiment_id: str, group: str, level: PermissionLevel | None,
                                    members: Iterable[str]) -> None:
        permission = EXPERIMENT_PERMISSION.get(level) if level is not None else None
        self._set_group(group, _EXPERIMENT, experiment_id, permission, members)

    def set_group_model_permission(self, model_name: str, group: str, permission: str | None,
                                   members: Iterable[str]) -> None:
        self._set_group(group, _MODEL, model_name, permission, members)

    def group_model_permission(self, model_name: str, group: str) -> str | None:
        role_id = self._roles.get(group)
        if role_id is None:
            return None
        return next((p.permission for p in self.store.list_role_permissions(role_id)
                     if p.resource_type == _MODEL and p.resource_pattern == model_name), None)

    def _set_group(self, group: str, resource_type: str, resource_id: str, permission: str | None,
                   members: Iterable[str]) -> None:
        role_id = self._roles.get(group)
        if role_id is None:
            if permission is None:
                return
            role_id = self._roles[group] = self.store.create_role(ROLE_PREFIX + group, self.workspace,
                                                                  "an agentwharf group; managed by the platform").id
            self.sync_group(group, members)
        existing = next((p for p in self.store.list_role_permissions(role_id)
                         if p.resource_type == resource_type and p.resource_pattern == resource_id), None)
        if permission is None:
            if existing is not None:
                self.store.remove_role_permission(existing.id)
        elif existing is None:
            self.store.add_role_permission(role_id, resource_type, resource_id, permission)
        elif existing.permission != permission:
            self.store.update_role_permission(existing.id, permission)

    def sync_group(self, group: str, members: Iterable[str]) -> None:
        """Assign the group's role to exactly ``members`` (its users and service principals,
        nested groups expanded). Nothing to do for a group without grants."""
        role_id = self._roles.get(group)
        if role_id is None:
            return
        ids = {user.username: user.id for user in self.store.list_users()}
        wanted = {ids[name] for name in members if name in ids}
        assigned = {a.user_id for a in self.store.list_role_users(role_id)}
        for user_id in wanted - assigned:
            self.store.assign_role_to_user(user_id, role_id)
        for user_id in assigned - wanted:
            self.store.unassign_role_from_user(user_id, role_id)

    def rename_group(self, old: str, new: str) -> None:
        role_id = self._roles.pop(old, None)
        if role_id is not None:
            self.store.update_role(role_id, name=ROLE_PREFIX + new)
            self._roles[new] = role_id

    def delete_group(self, group: str) -> None:
        role_id = self._roles.pop(group, None)
        if role_id is not None:
            self.store.delete_role(role_id)  # its permissions and assignments go with it

    def groups_with_roles(self) -> list[str]:
        return sorted(self._roles)

    def dispose(self) -> None:
        self.store.engine.dispose()
