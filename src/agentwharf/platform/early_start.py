"""What ``agentwharf up`` starts before it imports the rest of the platform.

MLflow's tracking server takes ~4-5 s to import and answer; the platform's own modules take
~3-4 s to import. Done one after the other they were most of ``up``'s time. So the runner
prepares the home (closed to others, logs folder, agentwharf's migrations, which must come
before MLflow's server opens the same database) and launches MLflow's server with light imports
only, then imports the platform while MLflow starts on the other core. ``Platform.start`` does
the same itself when nobody did it first (an app made by ``create_app`` alone).

Light means it: this module imports nothing heavy at the top, and a home whose SQLite database
already has the newest tables (``store.schema_check``) launches MLflow without importing
Alembic at all (it cost ~0.5-0.8 s before the launch on every start).
"""

from __future__ import annotations

from pathlib import Path

from agentwharf.auth.home_secrets import close_to_others, private_key
from agentwharf.llm.gateway_env import gateway_environment
from agentwharf.platform.mlflow_server import MlflowServer
from agentwharf.settings import PlatformSettings
from agentwharf.store.schema_check import sqlite_schema_is_current

#: The platform's own identity towards MLflow (MLflow's admin), used only from inside.
PLATFORM_IDENTITY = "agentwharf-platform"


def prepare_home(settings: PlatformSettings) -> None:
    """The home holds every request and response, the database and the keys: its owner's
    alone (a home made by an older version is closed here too); then agentwharf's tables."""
    for folder in (settings.home, settings.run_dir):
        close_to_others(folder)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    if not sqlite_schema_is_current(settings.database_uri):
        from agentwharf.store.database import migrate  # Alembic and SQLAlchemy: ~0.5 s to import

        migrate(settings.database_uri)


def mlflow_gateway_env(settings: PlatformSettings) -> dict[str, str]:
    """MLflow's AI Gateway settings for its server and the platform process: the home's own
    key-encryption passphrase (generated on first start, 0600, never in a worker), the
    provider policy, and the default judge (online scoring in MLflow's server)."""
    passphrase = private_key(settings.secrets_dir / "mlflow-kek.key").hex()
    env = gateway_environment(passphrase, settings.llm_allow_private_providers, settings.llm_request_timeout)
    if settings.judge_endpoint:
        env["MLFLOW_GENAI_JUDGE_DEFAULT_MODEL"] = f"gateway:/{settings.judge_endpoint}"
    return env


def _mlflow_server_env(settings: PlatformSettings) -> dict[str, str]:
    """MLflow's server's own settings: its gateway's, and whether it stores custom scorers."""
    env = mlflow_gateway_env(settings)
    if not settings.mlflow_job_execution:
        # MLflow's server stores custom @scorer code (Scorer.register) only with this flag;
        # without its job runner it never runs it (it keeps such scorers as inert data):
        # agentwharf's sandbox does (quality). With MLflow's job runner on, the flag would let
        # MLflow run that code outside any sandbox, so custom scorers are refused there
        # (MLflow says why). Only MLflow's server gets it, never the platform process.
        env["MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS"] = "true"
    return env


def mlflow_server_for(settings: PlatformSettings, environ: dict[str, str]) -> MlflowServer:
    """The home's MLflow server, configured, not started."""
    return MlflowServer(settings.database_uri, settings.artifacts_destination, Path(settings.logs_dir) / "mlflow.log",
                        settings.mlflow_workers, environ, auth_database_uri=settings.auth_database_uri,
                        secrets_dir=settings.secrets_dir, admin=PLATFORM_IDENTITY,
                        job_execution=settings.mlflow_job_execution,
                        artifact_store_env=settings.artifact_store_environment())


def launch_mlflow(settings: PlatformSettings, server: MlflowServer) -> None:
    """Prepare the home and launch MLflow's server without waiting for it."""
    prepare_home(settings)
    server.extra_env = _mlflow_server_env(settings)
    server.launch()


def start_early(settings: PlatformSettings, environ: dict[str, str]) -> MlflowServer:
    server = mlflow_server_for(settings, environ)
    launch_mlflow(settings, server)
    return server
