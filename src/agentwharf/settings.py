"""Every setting agentwharf reads, declared once.

Nothing else in the package reads ``os.environ``: servers get a ``PlatformSettings`` passed to
their factories, clients a ``ClientSettings``. Both read ``AGENTWHARF_*`` variables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import orjson
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8710
#: Where a running platform records its pid and base URL, in its home.
PID_FILE_NAME = "platform.pid"
#: Where the first start of a home writes its admin's token (mode 0600).
ADMIN_TOKEN_FILE_NAME = "admin.token"

#: Worker processes per served version for each Databricks workload size.
DEFAULT_WORKLOAD_SIZES = {"Small": 1, "Medium": 2, "Large": 4}
#: Requests a worker process runs at once unless AGENTWHARF_WORKER_CONCURRENCY says otherwise.
DEFAULT_WORKER_CONCURRENCY = 1024
#: Databases AGENTWHARF_DATABASE_URL may name (``postgres`` is libpq's spelling of ``postgresql``).
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres")


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` or ``postgres://`` (libpq's spellings) as SQLAlchemy's psycopg (3)
    dialect; a URL that names its driver (``postgresql+psycopg2://``) is left as it is."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


def redacted_url(url: str) -> str:
    """A database URL fit for a message or a log: its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


class PlatformSettings(BaseSettings):
    """What `agentwharf up` needs: where it lives, where it listens, how it serves."""

    # populate_by_name: code sets fields by name (``worker_concurrency=``) whatever their alias.
    model_config = SettingsConfigDict(env_prefix="AGENTWHARF_", extra="ignore", populate_by_name=True)

    home: Path = Field(default=Path(".agentwharf"), description="Folder for the database, artifacts, logs and sockets.")
    #: Listen address (AGENTWHARF_LISTEN_HOST; clients read AGENTWHARF_HOST as the platform's URL).
    listen_host: str = "127.0.0.1"
    port: int = DEFAULT_PORT

    workload_sizes: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_WORKLOAD_SIZES))
    #: Requests one worker process runs at once (AGENTWHARF_WORKER_CONCURRENCY; the former
    #: AGENTWHARF_WORKER_THREADS still works). Agents spend their time waiting on LLM calls, and
    #: a waiting request costs a sleeping thread (a synchronous ``predict``, threads started
    #: only as requests need them) or a suspended coroutine (an async ``predict_stream``), so a
    #: Small version (one process) holds a thousand of them. Requests past it queue in the worker.
    worker_concurrency: int = Field(default=DEFAULT_WORKER_CONCURRENCY, ge=1,
                                    validation_alias=AliasChoices("AGENTWHARF_WORKER_CONCURRENCY",
                                                                  "AGENTWHARF_WORKER_THREADS"))
    #: How long a worker may take to load its model before the deploy fails.
    worker_start_timeout: float = 300.0
    #: Warm spare workers kept per runtime (one Python: the platform's or a model environment's)
    #: once that runtime has started a worker: MLflow already imported, waiting for a version to
    #: serve, so a deploy or restart mostly waits for the model load (``serving.spares``). 0: off.
    worker_spares: int = Field(default=1, ge=0, le=4)
    #: How the gateway reaches local worker processes (``runtime`` ``local``), with the same
    #: frames either way: ``unix`` sockets in the run folder (0600, the platform's user only),
    #: or ``tcp`` on ``worker_bind_host`` (each worker takes a free port and says which), the
    #: transport a worker on another machine would need. A TCP port is open to anything that can
    #: reach it, so each TCP worker gets a random secret of its own (on stdin, never in argv or
    #: the environment) and closes connections that do not prove it within seconds (an HMAC
    #: challenge; see ``serving.transport``).
    worker_transport: Literal["unix", "tcp"] = "unix"
    #: The address TCP workers listen on. Loopback by default: open it wider (a private
    #: network's address) only for workers the gateway reaches from another machine, since
    #: the frames are not encrypted.
    worker_bind_host: str = Field(default="127.0.0.1", min_length=1)
    #: ``uv``: each version runs in an environment built from its model's logged requirements
    #: (shared by versions with the same ones); ``local``: in the platform's own (a deploy may
    #: ask for either).
    env_manager: Literal["uv", "local"] = "uv"
    #: Where served versions run: ``local`` worker processes (the supervisor) or ``ray``, a Ray
    #: Serve application per version on the Ray cluster at ``ray_address`` (``pip install
    #: 'agentwharf[ray]'``; see README, "Running on more than one machine").
    runtime: Literal["local", "ray"] = "local"
    #: The Ray cluster (``host:port`` of its GCS, as ``ray start --head`` prints); unset: ``auto``.
    ray_address: str | None = None
    #: CPUs Ray reserves for each replica of a served version.
    ray_replica_cpus: float = 1.0
    #: How long building one model environment may take before the deploy fails.
    environment_build_timeout: float = 1800.0
    #: Where model environments live (default ``<home>/envs``); several homes may share one.
    environments_dir: Path | None = None
    #: Back-off between restarts of a crashed worker: doubles from min to max.
    restart_backoff_min: float = 0.5
    restart_backoff_max: float = 30.0
    #: How often the rollout controller judges running rollouts' gates.
    rollout_interval_seconds: float = Field(default=5.0, gt=0)
    #: How often the control process publishes the serving state (routes, workers, tokens) and
    #: gateway processes (``agentwharf gateway``) read it: how soon a change reaches them.
    serving_state_interval_seconds: float = Field(default=0.1, gt=0)
    #: Shadow copies in progress per endpoint; past it copies are dropped (and counted).
    shadow_max_in_flight: int = Field(default=16, ge=1)
    #: A scale-to-zero version stops its workers after this many idle seconds.
    scale_to_zero_idle_seconds: float = 900.0
    #: How long a request to a scaled-to-zero version waits for its workers to start.
    cold_start_timeout: float = 300.0
    #: Upper bound on a single request to a worker (LLM agents can be slow).
    request_timeout: float = 600.0
    #: Largest request body the gateway reads (Databricks' payload limit); larger gets 413.
    max_request_bytes: int = 16 * 1024 * 1024
    #: How long a client may take to send a request's headers, and then its body.
    header_timeout: float = 15.0
    body_timeout: float = 60.0
    #: Idle keep-alive connections are closed after this many seconds.
    keep_alive_timeout: float = 5.0
    #: Open connections beyond this are refused (503 JSON) as they arrive.
    max_connections: int = 4096
    #: Requests in progress at once; more get 503 + Retry-After (JSON) instead of queueing.
    limit_concurrency: int = 2048
    #: How long MLflow's server may be silent on a proxied request before it is answered 504.
    mlflow_proxy_timeout: float = 60.0
    #: Each span attribute, request and response in a stored trace holds at most this many
    #: characters; longer ones are cut and flagged (metadata ``agentwharf.truncated``).
    trace_max_field_chars: int = 1024 * 1024
    #: Requests are refused (507) while less than this is free on the home's disk.
    min_free_disk_bytes: int = 512 * 1024 * 1024
    max_served_entities: int = 15
    mlflow_start_timeout: float = 120.0
    #: When this many bytes are spooled but not yet stored, new requests get 503 + Retry-After
    #: instead of risking unrecorded work.
    spool_max_pending_bytes: int = 1024 * 1024 * 1024
    spool_segment_bytes: int = 64 * 1024 * 1024
    writer_batch_size: int = 5000
    #: Request and response payloads longer than this are truncated (and flagged) in the
    #: inference table; the trace keeps them whole.
    inference_max_payload_chars: int = 1_000_000
    #: CPU niceness of the spool writer: serving first, storing when there is CPU to spare.
    writer_nice: int = 10
    #: How long shutdown waits for the writer to drain the spool.
    writer_drain_timeout: float = 120.0
    #: Workers of the MLflow server's own uvicorn.
    mlflow_workers: int = 1
    #: MLflow's job runner (its huey consumers: ~2 GB and 8 processes at rest), for what runs
    #: on it: MLflow's own scheduled online scoring, prompt optimization jobs. Off unless asked.
    mlflow_job_execution: bool = False
    #: MLflow's usage telemetry (every process that imports MLflow 3 fetches a config from the
    #: internet and reports usage to MLflow's developers). Off unless asked: a self-hosted
    #: platform makes no outbound call of its own accord. A ``MLFLOW_DISABLE_TELEMETRY`` or
    #: ``DO_NOT_TRACK`` already in the environment is left as it is.
    mlflow_telemetry: bool = False
    #: Benchmarks only (``make bench`` measures the cost of authentication with it): no token
    #: is checked and every request acts as the admin. Refused unless listening on loopback.
    benchmark_without_auth: bool = False
    #: ``platform.log`` as text lines or JSON lines; rotated at this size, keeping this many.
    log_format: Literal["text", "json"] = "text"
    log_max_bytes: int = 50 * 1024 * 1024
    log_backups: int = 5
    #: One line per answered request in ``platform.log`` (method, path, status, duration, ids).
    access_log: bool = True
    #: Lifetime of the on-behalf-of-user token each request gets (models with api_scopes).
    obo_token_lifetime_seconds: float = 300.0
    #: Lifetime of the credential a starting worker uses to read its model from MLflow.
    load_token_lifetime_seconds: float = 600.0
    #: How long an LLM endpoint's provider may take to answer (streaming: to send its first
    #: chunk, then each next one) before the call is answered 504.
    llm_request_timeout: float = 120.0
    #: LLM endpoints may point at providers on loopback or private addresses and over plain
    #: http (a vLLM, Ollama or llama.cpp server on your own network). Off: public https
    #: providers only, MLflow's own default.
    llm_allow_private_providers: bool = True
    #: How often the gateway checks MLflow's AI Gateway for changes made there (its UI or
    #: REST) to the LLM endpoints it serves; changes made through agentwharf apply at once.
    llm_config_refresh_seconds: float = 5.0
    #: The platform LLM endpoint judges use when given no model: MLflow's server (online
    #: scoring) and deployed models get ``MLFLOW_GENAI_JUDGE_DEFAULT_MODEL=gateway:/<it>``,
    #: and the ``safety`` and ``pii`` guardrails of ``ai-gateway`` run on it.
    judge_endpoint: str | None = None
    #: Online scoring (``agentwharf.quality``). A custom ``@scorer``'s call may take this long
    #: (wall clock) before its process is killed and the trace gets an error assessment; this
    #: much CPU time per call; and its process's memory may grow this far past start-up.
    scorer_timeout_seconds: float = 10.0
    scorer_cpu_seconds: float = 10.0
    scorer_memory_bytes: int = 512 * 1024 * 1024
    #: Confine custom scorer processes with Landlock (files, TCP, signals) where the kernel has it.
    scorer_confinement: bool = True
    #: Judge calls (built-in and LLM judges) the scoring process makes at once.
    scoring_judge_threads: int = 16
    #: Traces waiting longer than this for online scoring are skipped (a platform down for a day
    #: does not score a day of traffic at once); counted in /metrics.
    scoring_max_backlog_seconds: float = 3600.0
    #: How often trends for /metrics, alert rules and review rules are evaluated.
    monitor_interval_seconds: float = 10.0
    #: An alert's webhook: each attempt's timeout, and attempts before giving up (back-off
    #: doubling from 1 s up to a minute between them).
    alert_webhook_timeout: float = 10.0
    alert_webhook_attempts: int = 8
    #: Online scoring results (``aw_monitor_scores``, behind trends and alerts) older than this
    #: are pruned; the MLflow assessments on the traces stay.
    monitor_retention_days: float = 30.0

    @field_validator("benchmark_without_auth")
    @classmethod
    def _loopback_only(cls, value: bool, info) -> bool:
        host = info.data.get("listen_host", "127.0.0.1")
        if value and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("benchmark_without_auth is only allowed when listening on loopback (127.0.0.1)")
        return value

    @field_validator("workload_sizes")
    @classmethod
    def _positive_sizes(cls, sizes: dict[str, int]) -> dict[str, int]:
        for name, count in sizes.items():
            if count < 1:
                raise ValueError(f"workload size {name!r} must have at least one worker, got {count}")
        return sizes

    @property
    def worker_threads(self) -> int:
        """``worker_concurrency``'s former name, for code written before it (read only)."""
        return self.worker_concurrency

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.listen_host in ("0.0.0.0", "::") else self.listen_host
        return f"http://{host}:{self.port}"

    #: One database for MLflow's tables and agentwharf's: ``postgresql://user:password@host:port/db``
    #: (or ``sqlite:///path``). Defaults to SQLite in the home.
    database_url: str | None = None
    #: Where MLflow keeps artifacts (models, run files): ``s3://bucket/prefix`` or a local folder.
    #: Defaults to ``<home>/artifacts``. Clients and workers reach them through MLflow's artifact
    #: service at the base URL either way; only MLflow's server holds the store's credentials.
    artifacts_uri: str | None = None
    #: An S3-compatible store's endpoint (MinIO, Ceph, ...); unset for AWS S3.
    s3_endpoint_url: str | None = None
    #: The store's access key; unset: boto3's own chain (AWS_* variables, ~/.aws, an instance role).
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str | None = None

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme.split("+", 1)[0] not in DATABASE_SCHEMES:
            raise ValueError(f"AGENTWHARF_DATABASE_URL must be postgresql://user:password@host:port/database or "
                             f"sqlite:///path, got one starting {scheme or url[:12]!r}")
        return url

    @field_validator("artifacts_uri")
    @classmethod
    def _known_artifact_store(cls, uri: str | None) -> str | None:
        if uri is None:
            return None
        parts = urlsplit(uri)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ValueError(f"AGENTWHARF_ARTIFACTS_URI {uri!r} names no bucket: use s3://bucket/prefix")
            return uri.rstrip("/")
        if parts.scheme in ("", "file"):
            return uri
        raise ValueError(f"AGENTWHARF_ARTIFACTS_URI must be s3://bucket/prefix or a local folder, got {uri!r}")

    @property
    def database_uri(self) -> str:
        """The database as SQLAlchemy (ours and MLflow's) is told it: ``postgresql://`` names
        the psycopg (3) driver, the one the server extra installs."""
        if self.database_url is None:
            return f"sqlite:///{self.home.resolve() / 'agentwharf.db'}"
        return sqlalchemy_url(self.database_url)

    @property
    def auth_database_uri(self) -> str:
        """MLflow's basic-auth store (users, MLflow permissions): its own SQLite file beside
        agentwharf's, or the same server database when one is configured."""
        return self.database_uri if self.database_url else f"sqlite:///{self.home.resolve() / 'mlflow-auth.db'}"

    @property
    def artifacts_destination(self) -> str:
        """What MLflow's server stores artifacts in (``--artifacts-destination``)."""
        return self.artifacts_uri or str(self.artifacts_dir)

    @property
    def artifacts_in_s3(self) -> bool:
        return (self.artifacts_uri or "").startswith("s3://")

    def artifact_store_environment(self) -> dict[str, str]:
        """The variables MLflow's S3 artifact repository (boto3) reads, for MLflow's server only."""
        if not self.artifacts_in_s3:
            return {}
        values = {"MLFLOW_S3_ENDPOINT_URL": self.s3_endpoint_url, "AWS_ACCESS_KEY_ID": self.s3_access_key_id,
                  "AWS_SECRET_ACCESS_KEY": self.s3_secret_access_key.get_secret_value() if self.s3_secret_access_key else None,
                  "AWS_DEFAULT_REGION": self.s3_region}
        return {k: v for k, v in values.items() if v}

    @property
    def secrets_dir(self) -> Path:
        return self.home.resolve() / "secrets"

    @property
    def admin_token_file(self) -> Path:
        """Where the first start writes the admin's token (mode 0600)."""
        return self.home.resolve() / ADMIN_TOKEN_FILE_NAME

    @property
    def artifacts_dir(self) -> Path:
        return self.home.resolve() / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.home.resolve() / "logs"

    @property
    def run_dir(self) -> Path:
        """Worker sockets. A Unix socket path is limited to ~107 bytes, so a deep home puts
        them in a short folder under the system temp dir, named after the home (a socket's
        name, ``w-<12>-<replica>-<4>.sock``, takes up to 28 more)."""
        folder = self.home.resolve() / "run"
        if len(str(folder)) <= 76:
            return folder
        import hashlib
        import tempfile

        return Path(tempfile.gettempdir()) / f"agentwharf-{hashlib.sha1(str(folder).encode()).hexdigest()[:10]}"

    @property
    def envs_dir(self) -> Path:
        """Model environments, one folder per distinct set of requirements."""
        return self.environments_dir.resolve() if self.environments_dir else self.home.resolve() / "envs"

    @property
    def models_dir(self) -> Path:
        """Model files fetched for serving, one folder per model version."""
        return self.home.resolve() / "models"

    @property
    def runtime_dir(self) -> Path:
        """What a worker in a model's environment imports the worker runtime from."""
        return self.home.resolve() / "runtime"

    @property
    def monitor_dir(self) -> Path:
        """Online scoring's files: which environment each served version runs in."""
        return self.home.resolve() / "monitor"

    @property
    def spool_dir(self) -> Path:
        return self.home.resolve() / "spool"

    @property
    def pid_file(self) -> Path:
        return self.home.resolve() / PID_FILE_NAME


def recorded_base_url(home: Path) -> str | None:
    """The base URL a platform running on ``home`` recorded when it started, if any."""
    try:
        return orjson.loads((home / PID_FILE_NAME).read_bytes()).get("base_url")
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None


def home_admin_token(home: Path) -> str | None:
    """The admin token a home's platform wrote on its first start, if this user can read it."""
    try:
        return (home / ADMIN_TOKEN_FILE_NAME).read_text().strip() or None
    except OSError:
        return None


def _with_scheme(host: str) -> str:
    host = host.rstrip("/")
    return host if "://" in host else f"http://{host}"


class ClientSettings(BaseSettings):
    """What a client (`agentwharf.agents`, the CLI) needs to reach a platform.

    The platform is the first of: ``AGENTWHARF_HOST``; ``MLFLOW_TRACKING_URI`` when it is an
    http(s) URL (the platform serves MLflow's API at its base URL); ``DATABRICKS_HOST``; the
    URL recorded by a platform running on ``AGENTWHARF_HOME`` (``./.agentwharf``); the default
    port on this machine. The token is the first of ``AGENTWHARF_TOKEN``,
    ``MLFLOW_TRACKING_TOKEN``, ``DATABRICKS_TOKEN``, and that home's ``admin.token``.
    """

    model_config = SettingsConfigDict(env_prefix="AGENTWHARF_", extra="ignore", populate_by_name=True)

    host: str | None = None
    token: str | None = None
    #: The platform home whose recorded URL and ``admin.token`` are the fallbacks (AGENTWHARF_HOME).
    home: Path = Path(".agentwharf")
    timeout: float = 60.0
    mlflow_tracking_uri: str | None = Field(None, validation_alias="MLFLOW_TRACKING_URI")
    mlflow_tracking_token: str | None = Field(None, validation_alias="MLFLOW_TRACKING_TOKEN")
    databricks_host: str | None = Field(None, validation_alias="DATABRICKS_HOST")
    databricks_token: str | None = Field(None, validation_alias="DATABRICKS_TOKEN")

    @model_validator(mode="after")
    def _find_the_platform(self) -> ClientSettings:
        tracking = self.mlflow_tracking_uri if (self.mlflow_tracking_uri or "").startswith(("http://", "https://")) else None
        found = (self.host or tracking or self.databricks_host or recorded_base_url(self.home)
                 or f"http://127.0.0.1:{DEFAULT_PORT}")
        self.host = _with_scheme(found)
        self.token = self.token or self.mlflow_tracking_token or self.databricks_token
        return self

    def resolved_token(self) -> str | None:
        return self.token or home_admin_token(self.home)
