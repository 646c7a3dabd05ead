"""The platform: one ASGI app on one base URL, composed from its parts.

    /healthz                        liveness and readiness
    /metrics                        Prometheus metrics (spool depth, writer lag, requests)
    /serving-endpoints/...          the serving gateway (hot path, plain ASGI)
    /api/2.0/serving-endpoints...   the control plane (FastAPI)
    /api/2.0/agents/...             the control plane (FastAPI)
    everything else                 MLflow's own server (REST API, artifacts, UI, AI Gateway)

Start-up order matters: agentwharf's migrations run before MLflow's server starts (both write
the same SQLite file, and SQLite serialises writers), and endpoints are restored last, since
their workers load models from MLflow.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import os
import secrets
import sys
import time

import httpx
import orjson

from agentwharf import credentials, databricks_compat, web
from agentwharf.asgi import send_error, send_json
from agentwharf.auth.caller import Caller
from agentwharf.auth.gatekeeper import Gatekeeper, bearer_token, cross_site_cookie_request
from agentwharf.auth.home_secrets import ADMIN_NAME, private_key, write_private
from agentwharf.auth.identities import IdentityService
from agentwharf.auth.mlflow_bridge import MlflowAuthBridge
from agentwharf.auth.model_policy import ModelPolicy
from agentwharf.auth.tokens import LOAD_PREFIX, MONITOR_PREFIX, OBO_PREFIX, SYSTEM_PREFIX, TokenSigner
from agentwharf.control.app import create_control_app
from agentwharf.control.deployments import DeploymentService
from agentwharf.control.endpoints import EndpointService
from agentwharf.control.llm_endpoints import LlmEndpoints
from agentwharf.control.reconciler import Reconciler
from agentwharf.control.rollouts import RolloutService
from agentwharf.control.registry import MlflowRegistry
from agentwharf.control.routes import ControlState
from agentwharf.databricks_compat.mlflow_calls import MlflowCalls
from agentwharf.platform import metrics
from agentwharf.platform.logs import flush_access_log
from agentwharf.platform.server_process import ServerProcess
from agentwharf.platform.mlflow_proxy import MlflowProxy
from agentwharf.platform.early_start import launch_mlflow, mlflow_gateway_env, mlflow_server_for
from agentwharf.platform.mlflow_server import MlflowServer
from agentwharf.errors import PermissionDenied, Unauthenticated, Unavailable
from agentwharf.tls import tls_context
from agentwharf.web.sign_in import send_unauthenticated
from agentwharf.llm.calls import LlmCalls
from agentwharf.llm.shared_limits import SharedRateCounts
from agentwharf.llm.mlflow_admin import GatewayAdmin
from agentwharf.llm.runtime import LlmRuntime
from agentwharf.quality import alerts
from agentwharf.quality.guard import ScorerGuard
from agentwharf.quality.monitor import QualityMonitor
from agentwharf.quality.scoring_process import ScoringConfig, ScoringProcess
from agentwharf.serving.gateway import PREFIX as GATEWAY_PREFIX, Gateway
from agentwharf.serving.published import Sealer, StatePublisher
from agentwharf.serving.llm_serving import MLFLOW_GATEWAY_PREFIX
from agentwharf.serving.routing import RouteTable, worker_key
from agentwharf.serving.env_build import ENVIRONMENT_FILES
from agentwharf.serving.environments import Environments
from agentwharf.serving.ray_runtime import RayRuntime
from agentwharf.serving.supervisor import Supervisor, WorkerLauncher
from agentwharf.settings import PlatformSettings
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint, ServedEntity
from agentwharf.tracing.recorder import Recorder, free_bytes
from agentwharf.tracing.spool import SpoolAppender
from agentwharf.tracing.writer_process import WriterProcess

log = logging.getLogger("agentwharf.platform")

_CONTROL_PREFIXES = ("/api/2.0/serving-endpoints", "/api/2.0/agents/", "/api/2.0/permissions/", "/api/2.0/token",
                     "/api/2.0/preview/scim/", "/api/2.0/agentwharf/", "/api/2.0/openapi.json", "/api/2.0/docs",
                     *databricks_compat.ROUTE_PREFIXES)
#: Paths the platform answers itself (everything else is MLflow's).
_OWN_PREFIXES = (GATEWAY_PREFIX, *_CONTROL_PREFIXES, "/metrics")
#: Who every request is with AGENTWHARF_BENCHMARK_WITHOUT_AUTH (see settings): the admin.
_BENCHMARK_CALLER = Caller(name=ADMIN_NAME, kind="user", is_admin=True)


class Platform(ServerProcess):
    """Owns every part of a running platform; ``start``/``stop`` bracket its life."""

    def __init__(self, settings: PlatformSettings, environ: dict[str, str], mlflow: MlflowServer | None = None):
        self.settings = settings
        self.environ = environ
        self.started_at = 0.0
        #: This run's id: credentials minted for online scoring are good for this run only.
        self.boot_id = secrets.token_hex(16)
        self.db = Database(settings.database_uri)
        self.mlflow = mlflow or mlflow_server_for(settings, environ)
        self.scoring = ScoringProcess(ScoringConfig(
            database_uri=settings.database_uri, artifacts_dir=settings.artifacts_dir, logs_dir=settings.logs_dir,
            runtime_dir=settings.runtime_dir, served_environments=settings.monitor_dir / "served-environments.json",
            base_url=settings.base_url, judge_endpoint=settings.judge_endpoint, timeout_seconds=settings.scorer_timeout_seconds,
            cpu_seconds=settings.scorer_cpu_seconds, memory_bytes=settings.scorer_memory_bytes,
            confine=settings.scorer_confinement, judge_threads=settings.scoring_judge_threads,
            max_backlog_seconds=settings.scoring_max_backlog_seconds, mlflow_checkpoint=settings.mlflow_job_execution,
        ), self._worker_base_env(), self._monitor_credential)
        self.quality: QualityMonitor | None = None
        self._quality_task: asyncio.Task | None = None
        #: MLflow's AI Gateway in this process, for LLM endpoints (MLflow's server runs it too,
        #: for its own jobs: both decrypt keys with the home's key; see ``early_start.mlflow_gateway_env``).
        self.llm_runtime: LlmRuntime | None = None
        self.signer: TokenSigner | None = None
        self.identities: IdentityService | None = None
        self.gatekeeper: Gatekeeper | None = None
        self.bridge: MlflowAuthBridge | None = None
        self.registry: MlflowRegistry | None = None
        self.environments = Environments(settings.envs_dir, settings.models_dir, settings.runtime_dir, settings.env_manager,
                                         self._worker_base_env(), self._load_credential, settings.environment_build_timeout,
                                         env_files=self._model_environment_files)
        launcher = WorkerLauncher(settings.worker_concurrency, self._worker_base_env(), self._load_credential,
                                  max_field_chars=settings.trace_max_field_chars,
                                  worker_pythonpath=self.environments.worker_pythonpath,
                                  spares=settings.worker_spares)
        self.supervisor = self._runtime(launcher)
        self.routes = RouteTable()
        self.recorder = Recorder(SpoolAppender(settings.spool_dir, settings.spool_segment_bytes), settings.spool_max_pending_bytes,
                                 settings.min_free_disk_bytes)
        self.writer = WriterProcess(settings.database_uri, settings.spool_dir, settings.logs_dir / "writer.log",
                                    settings.writer_batch_size, settings.inference_max_payload_chars, environ,
                                    nice=settings.writer_nice)
        self._monitor: asyncio.Task | None = None
        #: Publishes routes, workers and identities for gateway processes (``agentwharf gateway``).
        self._publisher: asyncio.Task | None = None
        #: Rate-limit counts exchanged with gateway processes (``shared_limits``).
        self._rate_counts: asyncio.Task | None = None
        self._rollout_controller: asyncio.Task | None = None
        self.gateway = Gateway(self.routes, self.supervisor, self.recorder, settings.request_timeout, self._user_token,
                               max_request_bytes=settings.max_request_bytes, body_timeout=settings.body_timeout,
                               start_wait=settings.cold_start_timeout)
        self.gateway.llm_calls = LlmCalls(settings.llm_request_timeout)
        self.gateway.max_field_chars = settings.trace_max_field_chars
        self.gateway.shadows.max_in_flight = settings.shadow_max_in_flight
        #: Requests in progress, for ``limit_concurrency``.
        self.in_flight = 0
        self.metrics = metrics.PlatformMetrics(self)
        self.gateway.metrics = self.metrics
        self.mlflow_proxy: databricks_compat.DatabricksTrackingView | None = None
        #: ``mlflow_proxy`` with the console link added to MLflow's UI page.
        self.proxy = None
        self.control_app = None
        #: The pages (serving console, playground, review app); see ``agentwharf.web``.
        self.web_app = None
        # A deploy waits for its environment to be built, then for its model to load.
        self.reconciler = Reconciler(self.db, self.supervisor, self.routes, settings.workload_sizes,
                                     settings.worker_start_timeout + settings.environment_build_timeout,
                                     self._worker_env, self._model_policy, self._llm_changed)

    def _runtime(self, launcher: WorkerLauncher) -> Supervisor | RayRuntime:
        """What runs served versions (``AGENTWHARF_RUNTIME``): worker processes here, or Ray Serve."""
        settings = self.settings
        if settings.runtime == "ray":
            return RayRuntime(settings.ray_address, settings.worker_concurrency, settings.trace_max_field_chars,
                              self._worker_base_env(), self._load_credential, settings.logs_dir,
                              replica_cpus=settings.ray_replica_cpus, start_timeout=settings.worker_start_timeout,
                              cold_start_timeout=settings.cold_start_timeout,
                              idle_seconds=settings.scale_to_zero_idle_seconds)
        return Supervisor(
            launcher, settings.run_dir, settings.logs_dir, environments=self.environments,
            start_timeout=settings.worker_start_timeout,
            backoff_min=settings.restart_backoff_min,
            backoff_max=settings.restart_backoff_max,
            idle_seconds=settings.scale_to_zero_idle_seconds,
            cold_start_timeout=settings.cold_start_timeout,
            worker_transport=settings.worker_transport,
            bind_host=settings.worker_bind_host,
        )

    async def _llm_changed(self, name: str, exists: bool) -> None:
        if self.llm_runtime is None:
            return
        if exists:
            await self.llm_runtime.reload(name)
        else:
            self.llm_runtime.forget(name)
            self.gateway.limiter.forget(name)

    def _worker_base_env(self) -> dict[str, str]:
        # The platform's own credentials (whoever started it, its database and object store)
        # never reach model code, nor the environment builder that fetches the model.
        env = {k: v for k, v in self.environ.items() if not credentials.platform_secret(k)}
        # Workers reach MLflow through the platform's base URL, like any other client.
        env["MLFLOW_TRACKING_URI"] = self.settings.base_url
        env["MLFLOW_REGISTRY_URI"] = self.settings.base_url
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _worker_env(self, endpoint: Endpoint, entity: ServedEntity, policy: ModelPolicy) -> dict[str, str]:
        env = {"AGENTWHARF_ENDPOINT": endpoint.name, "AGENTWHARF_SERVED_ENTITY": entity.name}
        if endpoint.experiment_id:
            env["MLFLOW_EXPERIMENT_ID"] = endpoint.experiment_id
        env = {**env, **{k: v for k, v in entity.environment_vars.items() if k not in credentials.CREDENTIAL_VARIABLES}}
        if policy.endpoints:
            # The model's system credential: it invokes exactly the endpoints the model declared.
            # The endpoint's id and the model version are in the claims, so a credential minted
            # for one deployment never matches another that reuses the names.
            token = self.signer.mint(SYSTEM_PREFIX, {"ep": endpoint.name, "ent": entity.name, "eid": endpoint.id,
                                                     "model": f"{entity.entity_name}/{entity.entity_version}",
                                                     "res": sorted(policy.endpoints)}, None)
            env.update(credentials.system_environment(self.settings.base_url, token))
            for key, value in credentials.openai_environment(self.settings.base_url, token).items():
                env.setdefault(key, value)
        if self.settings.judge_endpoint:
            env.setdefault("MLFLOW_GENAI_JUDGE_DEFAULT_MODEL", f"gateway:/{self.settings.judge_endpoint}")
        return env

    def _model_policy(self, model_name: str, version: str) -> ModelPolicy:
        return self.registry.model_policy(model_name, version) if self.registry is not None else ModelPolicy()

    def _model_environment_files(self, model_uri: str) -> dict[str, bytes]:
        name, _, version = model_uri[len("models:/"):].rpartition("/")
        return self.registry.model_files(name, version, ENVIRONMENT_FILES) if self.registry is not None else {}

    async def _prepare_scorer_environment(self, key: str, model_uri: str, log_path) -> str:
        """A registered model version's environment for a custom scorer (built as a deploy's)."""
        return (await self.environments.prepare(key, model_uri, "uv", log_path)).python

    def _monitor_credential(self) -> str:
        """Online scoring's credential for its judges' LLM calls (this run only)."""
        return self.signer.mint(MONITOR_PREFIX, {"boot": self.boot_id}, None)

    def _served_environments(self) -> dict[str, str]:
        """Served version (``endpoint/entity``) -> the python its workers run (``model``
        environments of custom scorers run there too)."""
        found = {}
        for key, version in self.supervisor.versions.items():
            runtime = version.runtime
            found[key] = runtime.python if runtime is not None and runtime.environment is not None else sys.executable
        return found

    def _endpoint_of_experiment(self, experiment_id: str) -> str | None:
        with self.db.session() as session:
            return session.query(Endpoint.name).filter(Endpoint.experiment_id == experiment_id).scalar()

    def _load_credential(self, key: str) -> str:
        """A starting worker's short-lived, read-only way into MLflow, to fetch its model."""
        return self.signer.mint(LOAD_PREFIX, {"key": key}, self.settings.load_token_lifetime_seconds)

    def _user_token(self, caller: Caller, scopes: tuple[str, ...]) -> str:
        return self.signer.mint(OBO_PREFIX, {"sub": caller.name, "sc": list(scopes)},
                                self.settings.obo_token_lifetime_seconds)

    def _entity_live(self, endpoint: str, entity: str, token: str) -> bool:
        """Whether the served entity runs now with exactly this credential in its spec."""
        version = self.supervisor.versions.get(worker_key(endpoint, entity))
        if version is None:
            return False
        current = dict(version.spec.env).get("DATABRICKS_TOKEN", "")
        return hmac.compare_digest(current.encode(), token.encode())

    def _open_identities(self) -> None:
        self.signer = TokenSigner(private_key(self.settings.secrets_dir / "signing.key"))
        self.bridge = MlflowAuthBridge(self.settings.auth_database_uri)
        self.identities = IdentityService(self.db, self.bridge)
        self.gatekeeper = Gatekeeper(self.identities, self.signer, self._entity_live)
        self.gatekeeper.boot_id = self.boot_id
        self.gateway.gatekeeper = self.gatekeeper
        self.identities.sync_mlflow()
        if not self.identities.list_principals():
            admin = self.identities.create_principal(ADMIN_NAME, "user", is_admin=True, created_by="agentwharf up")
            token, _ = self.identities.create_token(admin.name, None, "created by the first start of this home")
            write_private(self.settings.admin_token_file, token.encode() + b"\n")
            log.info("created user %r (admin); its token is in %s (mode 0600)", admin.name, self.settings.admin_token_file)

    async def start(self) -> None:
        started = time.monotonic()
        if not self.mlflow.launched:  # else the runner did it before importing this module (early_start)
            await asyncio.to_thread(launch_mlflow, self.settings, self.mlflow)
        gateway_env = await asyncio.to_thread(mlflow_gateway_env, self.settings)
        # The imports the platform needs once MLflow's server answers (its auth store) run while
        # that server starts: its start-up is one process on one core, and this one waits.
        await asyncio.gather(self.mlflow.wait_ready(self.settings.mlflow_start_timeout),
                             asyncio.to_thread(MlflowAuthBridge.import_mlflow_store))
        # The writer stores into MLflow's tables, which MLflow's server has just created; it
        # first drains whatever an earlier run left spooled.
        self.recorder.appender.open()
        self.writer.start()
        self._monitor = asyncio.create_task(self._watch_spool(), name="spool-monitor")
        await asyncio.to_thread(self._open_identities)
        self.registry = MlflowRegistry(self.mlflow.url, self.mlflow.secret)
        proxy = MlflowProxy(self.mlflow.url, self.mlflow.secret, self.identities, self.settings.mlflow_proxy_timeout)
        # Scorers on an endpoint's experiment need CAN_MANAGE on it (and CAN_QUERY on their judges').
        guarded = ScorerGuard(proxy, self._endpoint_of_experiment, lambda: self.gatekeeper,
                              lambda name: self.routes.get(name) is not None, self.settings.body_timeout,
                              store_of=lambda: self.llm_runtime.store)
        self.mlflow_proxy = databricks_compat.DatabricksTrackingView(guarded)
        self.proxy = web.with_console_link(self.mlflow_proxy)
        self.llm_runtime = LlmRuntime(self.settings.database_uri, gateway_env, self.settings.llm_config_refresh_seconds)
        await self.llm_runtime.start()
        self.gateway.llm_runtime = self.llm_runtime
        endpoints = EndpointService(self.db, self.registry, self.reconciler, self.settings.workload_sizes,
                                    self.settings.max_served_entities, self.identities, self.gatekeeper,
                                    LlmEndpoints(GatewayAdmin(self.registry.client)))
        self.rollouts = RolloutService(endpoints, self.registry, httpx.AsyncClient(verify=tls_context()), self.gateway.shadows)
        control = ControlState(endpoints, DeploymentService(endpoints, self.rollouts), self.supervisor, self.db,
                               self.identities, self.gatekeeper, self.registry, self.metrics.endpoint_window,
                               self.settings.worker_concurrency, self.rollouts,
                               tracking_store=lambda: self.llm_runtime.store)
        self.control_app = create_control_app(control, databricks_compat.ROUTERS)
        self.web_app = web.create_web_app(web.WebContext(control, MlflowCalls(self.mlflow.url, self.mlflow.secret),
                                                         self.settings.logs_dir))
        self.supervisor.start_background()
        if isinstance(self.supervisor, RayRuntime):
            await self.supervisor.connect()
        await self.reconciler.restore()
        self._publisher = asyncio.create_task(self._publish_serving_state(), name="serving-state-publisher")
        self._rate_counts = asyncio.create_task(
            SharedRateCounts(self.db, self.gateway.limiter, "platform", self.routes.any_limited).run(self.settings.serving_state_interval_seconds),
            name="shared-rate-counts")
        # Rollouts resume from the database: judged only once the endpoints serve again.
        self._rollout_controller = asyncio.create_task(self.rollouts.run(self.settings.rollout_interval_seconds),
                                                       name="rollout-controller")
        self.quality = QualityMonitor(
            self.db, self.scoring, self._served_environments, self.settings.monitor_dir / "served-environments.json",
            self.settings.monitor_interval_seconds, self.settings.monitor_retention_days,
            deliveries=alerts.Deliveries(self.db, self.settings.alert_webhook_timeout, self.settings.alert_webhook_attempts),
            prepare_environment=self._prepare_scorer_environment, logs_dir=self.settings.logs_dir,
            tracking_store=lambda: self.llm_runtime.store)
        self._quality_task = asyncio.create_task(self.quality.run(), name="quality-monitor")
        self.started_at = time.time()
        # Start-up objects (MLflow, FastAPI, SQLAlchemy) never die: keep full GC passes off them.
        # No collection first: it found ~20 unreachable objects of ~370k and took ~0.3-0.8 s of
        # `up`; the platform's own start-up makes no garbage worth it (a worker, which loads a
        # user's model, does collect first).
        gc.freeze()
        log.info("platform ready on %s in %.1fs", self.settings.base_url, time.monotonic() - started)
        if self.settings.benchmark_without_auth:
            log.warning("AGENTWHARF_BENCHMARK_WITHOUT_AUTH is set: EVERY REQUEST IS TREATED AS THE ADMIN. "
                        "This exists only to measure what authentication costs; never expose this platform.")

    async def _publish_serving_state(self) -> None:
        if not isinstance(self.supervisor, Supervisor):
            return  # gateway processes reach local workers only (README, "Running on more than one machine")
        publisher = StatePublisher(self.db, self.routes, lambda: self.supervisor.versions, lambda: self.identities.revision,
                                   Sealer(private_key(self.settings.secrets_dir / "signing.key")), self.supervisor.note_demand,
                                   shadows=lambda: self.gateway.shadows.targets)
        await publisher.run(self.settings.serving_state_interval_seconds)

    async def _watch_spool(self) -> None:
        while True:
            self.writer.ensure_running()
            pending, lag = await asyncio.to_thread(self.writer.backlog)
            self.recorder.observe(pending, lag, free_bytes(self.settings.spool_dir))
            flush_access_log()
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        # Order: no more requests reach workers; the spool is closed; the writer drains it
        # into MLflow (so every answered request is stored); only then does MLflow stop.
        log.info("stopping: workers, then MLflow")
        for task in (self._publisher, self._rate_counts):
            if task is not None:
                task.cancel()
        if self._rollout_controller is not None:
            self._rollout_controller.cancel()
            await self.rollouts.http.aclose()
        await self.gateway.shadows.close()
        await self.supervisor.close()
        if self._monitor is not None:
            self._monitor.cancel()
        if self._quality_task is not None:
            self._quality_task.cancel()
        # Online scoring writes what it has scored, then exits (the rest waits in its queue);
        # undelivered alert events wait in theirs.
        if self.quality is not None:
            await self.quality.stop()
        else:
            await self.scoring.stop()
        self.recorder.appender.close()
        await self.writer.stop(self.settings.writer_drain_timeout)
        await self.mlflow.stop()
        if self.web_app is not None:
            await self.web_app.state.web.mlflow.close()
        if self.mlflow_proxy is not None:
            await self.mlflow_proxy.close()
        if self.llm_runtime is not None:
            await self.llm_runtime.close()
        if self.registry is not None:
            self.registry.close()
        if self.bridge is not None:
            self.bridge.dispose()
        self.db.dispose()

    def health(self) -> dict:
        states: dict[str, int] = {}
        for version in self.supervisor.versions.values():
            states[version.state] = states.get(version.state, 0) + 1
        return {
            "status": "ok",
            "base_url": self.settings.base_url,
            "home": str(self.settings.home.resolve()),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "mlflow": self.mlflow.url,
            "endpoints": len(self.routes.names()),
            "served_versions": states,
            "spool": {
                "pending_bytes": self.recorder.pending_estimate(),
                "writer_lag_seconds": round(self.recorder.lag_seconds, 3),
                "records": self.recorder.appender.appended_records,
                "rejected": self.recorder.rejected,
            },
        }

    async def _route(self, scope, receive, send) -> None:
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, orjson.dumps(self.health()))
            return
        if path == "/.well-known/databricks-config":
            # Every Databricks WorkspaceClient asks this first, without a token; {} means
            # "personal access tokens, no OAuth" (see shared/reference/databricks-clients.md).
            # It says nothing about the platform's contents.
            await send_json(send, 200, b"{}")
            return
        if path.startswith(databricks_compat.OAUTH_PREFIX):
            # OAuth clients have no bearer token yet: they get the reason, not a 401.
            await send_error(send, databricks_compat.OAUTH_NOT_IMPLEMENTED)
            return
        if path in web.PUBLIC_PATHS or path.startswith(web.PUBLIC_PREFIXES):
            await self._web(scope, receive, send)  # signing in, and the sign-in page's files
            return
        if not await self._admit(scope, send):
            return
        if path.startswith(GATEWAY_PREFIX):
            await self.gateway(scope, receive, send)
        elif path.startswith(MLFLOW_GATEWAY_PREFIX):
            # MLflow's gateway routes: the platform's LLM endpoints are answered by its gateway
            # (authorized, limited, recorded), anything else by MLflow's server.
            fallback = self.proxy if scope["agentwharf.caller"].via != "monitor" else _refuse_monitor
            await self.gateway.serve_mlflow_route(scope, receive, send, fallback)
        elif path.startswith(_CONTROL_PREFIXES):
            await self.control_app(scope, receive, send)
        elif path.startswith(web.PREFIXES) or path == "/serving":
            await self._web(scope, receive, send)
        elif path == "/metrics":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", metrics.CONTENT_TYPE.encode())]})
            await send({"type": "http.response.body", "body": self.metrics.render()})
        else:
            await self.proxy(scope, receive, send)

    async def _web(self, scope, receive, send) -> None:
        if self.web_app is None:
            await send_error(send, Unavailable("The platform is starting"))
            return
        await self.web_app(scope, receive, send)

    async def _admit(self, scope, send) -> bool:
        """Authenticate the request and keep worker-minted credentials to their one purpose.
        Answers 401/403 itself and returns False when the request goes no further."""
        if self.gatekeeper is None:
            await send_error(send, Unavailable("The platform is starting"))
            return False
        if self.settings.benchmark_without_auth:
            scope["agentwharf.caller"] = _BENCHMARK_CALLER
            return True
        try:
            caller = self.gatekeeper.authenticate(scope)
        except Unauthenticated as error:
            # A browser whose cookie no longer works is told so on the sign-in page.
            await send_unauthenticated(scope, send, error, "invalid" if bearer_token(scope) else None)
            return False
        scope["agentwharf.caller"] = caller
        path = scope["path"]
        if cross_site_cookie_request(scope):
            await send_error(send, PermissionDenied("A request signed in with the browser's cookie that changes something "
                                                    "must come from the platform's own pages (Origin check)"))
            return False
        if caller.via in ("system", "obo") and not path.startswith(GATEWAY_PREFIX):
            await send_error(send, PermissionDenied(f"A {caller.via} credential may only query serving endpoints"))
            return False
        if caller.via == "monitor" and not path.startswith((GATEWAY_PREFIX, MLFLOW_GATEWAY_PREFIX)):
            await send_error(send, PermissionDenied("Online scoring's credential may only call LLM endpoints"))
            return False
        if caller.via == "load" and (scope["method"] not in ("GET", "HEAD") or path.startswith(_OWN_PREFIXES)):
            await send_error(send, PermissionDenied("A worker's load credential may only read from MLflow"))
            return False
        return True



async def _refuse_monitor(scope, receive, send) -> None:
    await send_error(send, PermissionDenied("Online scoring's credential reaches only the platform's LLM endpoints"))


def create_app(settings: PlatformSettings, environ: dict[str, str] | None = None,
               mlflow: MlflowServer | None = None) -> Platform:
    """The platform's ASGI app. ``environ`` is the environment workers and MLflow inherit;
    ``mlflow`` the home's MLflow server if the caller launched it already (``early_start``)."""
    return Platform(settings, dict(os.environ) if environ is None else environ, mlflow)
