"""Every part of agentwharf that can be swapped, in one place.

datasette keeps its whole extension surface in ``hookspecs.py``; this is agentwharf's. Each
part is a ``Protocol`` below: the calls the rest of the platform makes on it, each documented,
and nothing else. ``EXTENSION_POINTS`` says, for each, which setting chooses the
implementation, which implementations exist, and where the choice is made. A new backend
(another database, another object store, Ray Serve) is an implementation of one of these, a
value its setting may name, and one line where the choice is made: not a fork.

    part             setting                      implementations
    database         AGENTWHARF_DATABASE_URL      SQLite (the default, in the home), PostgreSQL
    artifact store   AGENTWHARF_ARTIFACTS_URI     a local folder (the default), S3 or S3-compatible
    worker runtime   AGENTWHARF_RUNTIME           local worker processes (the default), Ray Serve
    trace sink       (one)                        the disk spool drained by the writer process
    token backend    (one)                        agentwharf's principals and token hashes

``tests/unit/test_extensions.py`` fails if a part or one of its calls is undocumented, if a
listed implementation stops matching its Protocol, or if a setting named here is not a real
one. Importing this module imports nothing else of agentwharf's (implementations are named,
not imported).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agentwharf.auth.caller import Caller
    from agentwharf.auth.identities import PrincipalInfo
    from agentwharf.auth.levels import PermissionLevel
    from agentwharf.serving.supervisor import ServedVersion, WorkerSpec
    from agentwharf.serving.worker_client import WorkerConnection

__all__ = ["EXTENSION_POINTS", "ArtifactStore", "BulkInserter", "ExtensionPoint", "TokenBackend", "TraceSink",
           "WorkerRuntime"]


@runtime_checkable
class BulkInserter(Protocol):
    """The database: the one piece of agentwharf's own code that differs per database.

    agentwharf's tables (SQLAlchemy models, Alembic migrations in ``store/``), MLflow's tracking
    and model-registry tables and MLflow's basic-auth store all live in the database
    ``AGENTWHARF_DATABASE_URL`` names, through SQLAlchemy; a database SQLAlchemy, Alembic and
    MLflow's SQL stores support needs only this: how the spool writer stores a batch of rows
    fast and exactly once.
    """

    def insert(self, connection: Any, batch: Sequence[tuple[str, Sequence[str], list[tuple]]]) -> None:
        """Store every table's rows of one batch, skipping rows already stored (a batch is
        replayed after a crash), inside the transaction open on ``connection`` (the DBAPI
        connection; the caller commits). ``batch`` is ``(table, columns, rows)`` in insertion
        order: a table comes before the tables whose foreign keys refer to it."""


@runtime_checkable
class ArtifactStore(Protocol):
    """Where model files and run artifacts live: MLflow's own artifact repositories, used by
    MLflow's server alone (``--serve-artifacts --artifacts-destination``). Every client, the
    platform's workers and environment builder included, goes through MLflow's artifact service
    at the base URL, so only MLflow's server holds the store's credentials. These are the calls
    that service makes; any MLflow artifact repository provides them."""

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        """Store one local file under ``artifact_path`` (an upload through the service)."""

    def list_artifacts(self, path: str | None = None) -> list[Any]:
        """The files and folders directly under ``path`` (MLflow ``FileInfo``: path, is_dir,
        file_size); empty for a folder that does not exist."""

    def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
        """Copy a file or folder to the local ``dst_path`` and return where it is (a download
        through the service streams from there)."""

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        """Delete a file or folder (deleting a run's or a model's artifacts)."""


@runtime_checkable
class WorkerRuntime(Protocol):
    """Where model versions run. The control plane says what should run (``ensure`` /
    ``stop``) and waits for it; the gateway asks for a connection to a ready replica
    (``acquire``); the console and metrics read ``versions``."""

    @property
    def versions(self) -> dict[str, ServedVersion]:
        """Each served version's runtime state by key (``<endpoint>/<entity>``): its spec,
        replicas, state (BUILDING, STARTING, READY, FAILED, RESTARTING, SCALED_TO_ZERO,
        STOPPED) and last error."""

    def start_background(self) -> None:
        """Start the runtime's own background work (scaling idle versions to zero)."""

    async def close(self) -> None:
        """Stop every version (platform shutdown)."""

    def ensure(self, spec: WorkerSpec) -> ServedVersion:
        """Make ``spec`` run (its environment built, its replicas started); a no-op if it runs
        already with the same spec, a restart if the spec changed."""

    async def stop(self, key: str) -> None:
        """Stop the version's replicas and forget it."""

    async def wait_ready(self, key: str, timeout: float) -> ServedVersion:
        """Return once the version answers; raise ``DeploymentFailed`` (with the load error)
        if its model failed to load, ``asyncio.TimeoutError`` after ``timeout`` seconds."""

    async def acquire(self, key: str) -> WorkerConnection:
        """A connection to the least busy ready replica (waking a scaled-to-zero version and
        waiting for a starting one); ``Unavailable`` or ``DeploymentFailed`` when none can
        answer."""


@runtime_checkable
class TraceSink(Protocol):
    """Where the gateway hands every request's record (its MLflow trace and inference-table
    row) before the answer leaves: once ``record`` returns, the request must never be lost."""

    def check_capacity(self) -> None:
        """Raise ``Unavailable`` (503, Retry-After) or ``InsufficientStorage`` (507) when a
        new request could not be recorded, before any work is done for it."""

    async def record(self, header: dict[str, Any], record: bytes) -> None:
        """Make one request's record durable (``header``: request id, endpoint, experiment,
        status, latency, caller...; ``record``: the trace and payloads, encoded)."""


@runtime_checkable
class TokenBackend(Protocol):
    """Who a personal access token is and what a principal may do on an endpoint: what the
    gatekeeper (the front door) asks on every request, so every answer must be fast (the
    default answers from memory: a SHA-256 and dictionary lookups)."""

    def authenticate_personal(self, token: str) -> Caller | None:
        """The caller a personal access token belongs to; None if unknown, revoked or expired."""

    def active_principal(self, name: str) -> PrincipalInfo | None:
        """The principal of that name if it exists and is active (an on-behalf-of token's
        subject is checked with this)."""

    def endpoint_level(self, endpoint: str, principal: str) -> PermissionLevel:
        """The principal's permission level on a serving endpoint (NO_PERMISSIONS if none)."""


@dataclass(frozen=True)
class ExtensionPoint:
    """One swappable part: its Protocol, what chooses the implementation, what exists."""

    name: str
    protocol: type
    #: The ``PlatformSettings`` field that chooses the implementation (None: there is one).
    setting: str | None
    #: ``module:attribute`` of each implementation that exists.
    implementations: tuple[str, ...]
    #: ``module:attribute`` of the code that picks the implementation.
    chosen_by: str
    notes: str


EXTENSION_POINTS: tuple[ExtensionPoint, ...] = (
    ExtensionPoint(
        "database", BulkInserter, "database_url",
        ("agentwharf.tracing.bulk:SqliteInserter", "agentwharf.tracing.bulk:PostgresInserter"),
        "agentwharf.tracing.bulk:inserter_for",
        "sqlite:/// (default: <home>/agentwharf.db, MLflow's auth store in <home>/mlflow-auth.db) or "
        "postgresql:// (every store in that database). Another database: an inserter here, its scheme "
        "in settings.DATABASE_SCHEMES, and support in SQLAlchemy, Alembic and MLflow's SQL stores."),
    ExtensionPoint(
        "artifact store", ArtifactStore, "artifacts_uri",
        ("mlflow.store.artifact.local_artifact_repo:LocalArtifactRepository",
         "mlflow.store.artifact.s3_artifact_repo:S3ArtifactRepository"),
        "agentwharf.platform.mlflow_server:MlflowServer",
        "A folder (default <home>/artifacts) or s3://bucket/prefix with AGENTWHARF_S3_* (AWS S3, MinIO, any "
        "S3-compatible store). Another MLflow artifact repository (gs://, wasbs://): its scheme accepted by "
        "settings' artifacts_uri check and its credentials in PlatformSettings.artifact_store_environment."),
    ExtensionPoint(
        "worker runtime", WorkerRuntime, "runtime",
        ("agentwharf.serving.supervisor:Supervisor", "agentwharf.serving.ray_runtime:RayRuntime"),
        "agentwharf.platform.app:Platform",
        "Local worker processes, one per replica, started through serving.supervisor.WorkerLauncher "
        "(every OS call in one place), reached over Unix sockets or TCP (worker_transport, "
        "serving.transport: the same frames, TCP behind a per-worker HMAC handshake); or Ray Serve, one application per served version on a Ray "
        "cluster, reached through Ray's handle with the same frames (serving.ray_runtime)."),
    ExtensionPoint(
        "trace sink", TraceSink, None,
        ("agentwharf.tracing.recorder:Recorder",),
        "agentwharf.platform.app:Platform",
        "A disk spool, group-committed, drained by the writer process (tracing.writer) into MLflow's "
        "trace tables and the inference table of the database above."),
    ExtensionPoint(
        "token backend", TokenBackend, None,
        ("agentwharf.auth.identities:IdentityService",),
        "agentwharf.platform.app:Platform",
        "agentwharf's principals, token hashes and grants in the database, answered from memory; "
        "signed worker credentials are the gatekeeper's own (auth.tokens) and need no backend."),
)
