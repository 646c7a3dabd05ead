"""Credentials a deployed agent can use, read inside the model (public API).

    from agentwharf.credentials import system_credentials, user_credentials

``system_credentials()`` is the model's own credential. It exists only when the logged model
declared resources (``DatabricksServingEndpoint(endpoint_name=...)``), and invokes exactly
those endpoints. It is also in the worker's environment as ``DATABRICKS_HOST`` /
``DATABRICKS_TOKEN`` (and ``AGENTWHARF_HOST`` / ``AGENTWHARF_TOKEN``), so Databricks' own
clients (``WorkspaceClient()``, ``get_deploy_client("databricks")``) pick it up unchanged.

``user_credentials()`` is the calling user's on-behalf-of token. It exists only inside
``predict`` / ``predict_stream`` of a model whose ``UserAuthPolicy`` declared ``api_scopes``,
is fresh for every request, expires after minutes, and carries only those scopes and only what
the caller may do. Call it inside ``predict``, never at load time.
"""

from __future__ import annotations

import contextvars
import os
from dataclasses import dataclass

#: Environment variables that carry credentials; workers never inherit the platform's own.
CREDENTIAL_VARIABLES = frozenset({
    "AGENTWHARF_TOKEN", "DATABRICKS_TOKEN", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_USERNAME", "DATABRICKS_CLIENT_SECRET",
    # The key that decrypts every LLM endpoint's provider keys (MLflow's AI Gateway).
    "MLFLOW_CRYPTO_KEK_PASSPHRASE",
})
#: What else in the platform's own environment reaches its stores: the database URL (it may
#: carry a password), the object store's keys, whether as agentwharf's settings or as the
#: variables boto3 and MLflow read. Only MLflow's server gets them (as settings, not inherited).
STORE_VARIABLES = frozenset({
    "AGENTWHARF_DATABASE_URL", "AGENTWHARF_S3_ACCESS_KEY_ID", "AGENTWHARF_S3_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "MLFLOW_BACKEND_STORE_URI", "MLFLOW_S3_ENDPOINT_URL", "PGPASSWORD",
})


def platform_secret(name: str) -> bool:
    """Whether the platform's environment variable ``name`` must stay out of its workers'."""
    return name in CREDENTIAL_VARIABLES or name in STORE_VARIABLES


class NoCredentials(RuntimeError):
    """The model was not given this kind of credential (see the module docstring)."""


@dataclass(frozen=True)
class Credentials:
    #: The platform's base URL; serving endpoints are under ``{host}/serving-endpoints/``.
    host: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


_user: contextvars.ContextVar[Credentials | None] = contextvars.ContextVar("agentwharf_user_credentials", default=None)


def system_environment(host: str, token: str) -> dict[str, str]:
    """The variables a worker with a system credential starts with."""
    return {"DATABRICKS_HOST": host, "DATABRICKS_TOKEN": token, "AGENTWHARF_HOST": host, "AGENTWHARF_TOKEN": token}


def openai_environment(host: str, token: str) -> dict[str, str]:
    """What makes ``openai.OpenAI()`` reach the platform's endpoints with the system credential
    (given to a worker unless its own ``environment_vars`` say otherwise)."""
    return {"OPENAI_BASE_URL": f"{host}/serving-endpoints", "OPENAI_API_KEY": token}


def system_credentials() -> Credentials:
    token = os.environ.get("DATABRICKS_TOKEN", "")
    if not token.startswith("aws_"):
        raise NoCredentials("This model has no system credential: declare the serving endpoints it calls as "
                            "resources when logging it (mlflow.models.resources.DatabricksServingEndpoint)")
    return Credentials(os.environ["DATABRICKS_HOST"], token)


def user_credentials() -> Credentials:
    credentials = _user.get()
    if credentials is None:
        raise NoCredentials("No on-behalf-of-user credentials here: they exist only inside predict of a model "
                            "whose auth_policy has a UserAuthPolicy with api_scopes")
    return credentials


def _set_user(credentials: Credentials | None) -> contextvars.Token:
    return _user.set(credentials)


def _reset_user(token: contextvars.Token) -> None:
    _user.reset(token)
