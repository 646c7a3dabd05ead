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
import logging
import os
import time

import orjson

from agentwharf.control.app import create_control_app
from agentwharf.control.deployments import DeploymentService
from agentwharf.control.endpoints import EndpointService
from agentwharf.control.reconciler import Reconciler
from agentwharf.control.registry import MlflowRegistry
from agentwharf.control.routes import ControlState
from agentwharf.platform import metrics
from agentwharf.platform.mlflow_proxy import MlflowProxy
from agentwharf.platform.mlflow_server import MlflowServer
from agentwharf.serving.gateway import PREFIX as GATEWAY_PREFIX, Gateway, send_json
from agentwharf.serving.routing import RouteTable
from agentwharf.serving.supervisor import Supervisor, WorkerLauncher
from agentwharf.settings import PlatformSettings
from agentwharf.store.database import Database, migrate
from agentwharf.store.models import Endpoint, ServedEntity
from agentwharf.tracing.recorder import Recorder
from agentwharf.tracing.spool import SpoolAppender
from agentwharf.tracing.writer_process import WriterProcess

log = logging.getLogger("agentwharf.platform")

_CONTROL_PREFIXES = ("/api/2.0/serving-endpoints", "/api/2.0/agents/")


class Platform:
    """Owns every part of a running platform; ``start``/``stop`` bracket its life."""

    def __init__(self, settings: PlatformSettings, environ: dict[str, str]):
        self.settings = settings
        self.environ = environ
        self.started_at = 0.0
        self.db = Database(settings.database_uri)
        self.mlflow = MlflowServer(settings.database_uri, settings.artifacts_dir, settings.logs_dir / "mlflow.log",
                                   settings.mlflow_workers, environ)
        launcher = WorkerLauncher(settings.worker_threads, self._worker_base_env())
        self.supervisor = Supervisor(
            launcher, settings.run_dir, settings.logs_dir,
            start_timeout=settings.worker_start_timeout,
            backoff_min=settings.restart_backoff_min,
            backoff_max=settings.restart_backoff_max,
            idle_seconds=settings.scale_to_zero_idle_seconds,
            cold_start_timeout=settings.cold_start_timeout,
        )
        self.routes = RouteTable()
        self.recorder = Recorder(SpoolAppender(settings.spool_dir, settings.spool_segment_bytes), settings.spool_max_pending_bytes)
        self.writer = WriterProcess(settings.database_uri, settings.spool_dir, settings.logs_dir / "writer.log",
                                    settings.writer_batch_size, settings.inference_max_payload_chars, environ,
                                    nice=settings.writer_nice)
        self._monitor: asyncio.Task | None = None
        self.gateway = Gateway(self.routes, self.supervisor, self.recorder, settings.request_timeout)
        self.proxy: MlflowProxy | None = None
        self.control_app = None
        self.reconciler = Reconciler(self.db, self.supervisor, self.routes, settings.workload_sizes,
                                     settings.worker_start_timeout, self._worker_env)

    def _worker_base_env(self) -> dict[str, str]:
        env = dict(self.environ)
        # Workers reach MLflow through the platform's base URL, like any other client.
        env["MLFLOW_TRACKING_URI"] = self.settings.base_url
        env["MLFLOW_REGISTRY_URI"] = self.settings.base_url
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    @staticmethod
    def _worker_env(endpoint: Endpoint, entity: ServedEntity) -> dict[str, str]:
        env = {"AGENTWHARF_ENDPOINT": endpoint.name, "AGENTWHARF_SERVED_ENTITY": entity.name}
        if endpoint.experiment_id:
            env["MLFLOW_EXPERIMENT_ID"] = endpoint.experiment_id
        return {**env, **entity.environment_vars}

    async def start(self) -> None:
        started = time.monotonic()
        for folder in (self.settings.home, self.settings.run_dir, self.settings.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(migrate, self.settings.database_uri)
        await self.mlflow.start(self.settings.mlflow_start_timeout)
        # The writer stores into MLflow's tables, which MLflow's server has just created; it
        # first drains whatever an earlier run left spooled.
        self.recorder.appender.open()
        self.writer.start()
        self._monitor = asyncio.create_task(self._watch_spool(), name="spool-monitor")
        self.proxy = MlflowProxy(self.mlflow.url)
        registry = MlflowRegistry(self.mlflow.url)
        endpoints = EndpointService(self.db, registry, self.reconciler, self.settings.workload_sizes,
                                    self.settings.max_served_entities)
        self.control_app = create_control_app(ControlState(endpoints, DeploymentService(endpoints), self.supervisor, self.db))
        self.supervisor.start_background()
        await self.reconciler.restore()
        self.started_at = time.time()
        # Start-up objects (MLflow, FastAPI, SQLAlchemy) never die: keep full GC passes off them.
        gc.collect()
        gc.freeze()
        log.info("platform ready on %s in %.1fs", self.settings.base_url, time.monotonic() - started)

    async def _watch_spool(self) -> None:
        while True:
            self.writer.ensure_running()
            pending, lag = await asyncio.to_thread(self.writer.backlog)
            self.recorder.observe(pending, lag)
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        # Order: no more requests reach workers; the spool is closed; the writer drains it
        # into MLflow (so every answered request is stored); only then does MLflow stop.
        log.info("stopping: workers, then MLflow")
        await self.supervisor.close()
        if self._monitor is not None:
            self._monitor.cancel()
        self.recorder.appender.close()
        await self.writer.stop(self.settings.writer_drain_timeout)
        await self.mlflow.stop()
        if self.proxy is not None:
            await self.proxy.close()
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

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path.startswith(GATEWAY_PREFIX):
                await self.gateway(scope, receive, send)
            elif path.startswith(_CONTROL_PREFIXES):
                await self.control_app(scope, receive, send)
            elif path == "/.well-known/databricks-config":
                # Every Databricks WorkspaceClient asks this first, without auth; {} means
                # "personal access tokens, no OAuth" (see shared/reference/databricks-clients.md).
                await send_json(send, 200, b"{}")
            elif path == "/healthz":
                await send_json(send, 200, orjson.dumps(self.health()))
            elif path == "/metrics":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})
                await send({"type": "http.response.body", "body": metrics.render(self).encode()})
            else:
                await self.proxy(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as error:
                    log.exception("platform failed to start")
                    await self.stop()
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: PlatformSettings, environ: dict[str, str] | None = None) -> Platform:
    """The platform's ASGI app. ``environ`` is the environment workers and MLflow inherit."""
    return Platform(settings, dict(os.environ) if environ is None else environ)
