"""Keeps MLflow's basic-auth store in step with agentwharf's principals and grants.

MLflow decides access to its own resources; this module only tells it who exists and which
grants follow from agentwharf's (an endpoint's reviewers read its experiment, a prefix grant
covers each registered model under the prefix). It writes MLflow's auth database through
MLflow's own store class, never with SQL of its own.
"""

from __future__ import annotations

import secrets

from agentwharf.auth.levels import PermissionLevel

#: What an endpoint permission level lets a principal do in the endpoint's MLflow experiment
#: (where its traces are): reviewers read traces and give feedback (EDIT lets MLflow accept
#: assessments), managers manage. CAN_VIEW and CAN_QUERY see no traces.
EXPERIMENT_PERMISSION = {
    PermissionLevel.CAN_REVIEW: "EDIT",
    PermissionLevel.CAN_MANAGE: "MANAGE",
}


class MlflowAuthBridge:
    def __init__(self, auth_database_uri: str):
        from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

        self.store = SqlAlchemyStore()
        self.store.init_db(auth_database_uri)

    def ensure_user(self, name: str, is_admin: bool) -> None:
        """MLflow's user of the same name. Its password is random and never used: callers
        authenticate to agentwharf, which vouches for them to MLflow."""
        if self.store.has_user(name, use_primary=True):
            self.store.update_user(name, is_admin=is_admin)
            return
        self.store.create_user(name, secrets.token_urlsafe(24) + "Aa1!", is_admin=is_admin)

    def delete_user(self, name: str) -> None:
        if self.store.has_user(name, use_primary=True):
            self.store.delete_user(name)

    def set_experiment_access(self, experiment_id: str, username: str, level: PermissionLevel | None) -> None:
        permission = EXPERIMENT_PERMISSION.get(level) if level is not None else None
        self._set(username, "experiment", experiment_id, permission)

    def set_model_permission(self, model_name: str, username: str, permission: str | None) -> None:
        self._set(username, "registered_model", model_name, permission)

    def model_permission(self, model_name: str, username: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.store.get_registered_model_permission(model_name, username).permission
        except MlflowException:
            return None

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

    def dispose(self) -> None:
        self.store.engine.dispose()
