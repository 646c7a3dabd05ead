"""A gateway process (``agentwharf gateway``): one more server of ``/serving-endpoints/...``.

The platform's own process (the control process) keeps the desired state, runs the workers and
MLflow's server, and serves everything. A gateway process serves only the serving routes, for
more throughput or for a gateway that may die without taking the platform with it; several of
them sit behind a load balancer (README, "Running on more than one machine"). It holds no state
only it knows:

- routes, workers' sockets, tokens and grants: read from the database, where the control
  process publishes them (``serving.published``), within a fraction of a second of a change;
- its records: a spool of its own (``<home>/spool-gateway-<N>``) drained by a writer of its
  own into the same store, with checkpoint row ``1 + N``, so gateways never contend on a spool
  and every acknowledged request is stored even if this process is killed (a restart with the
  same ``--index`` drains what it left);
- cold starts: asked of the control process through the database.

Every gateway copies its own traffic to a running shadow rollout's candidate, and counts the
other processes' calls against rate limits (``llm.shared_limits``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import httpx
import orjson

from agentwharf.asgi import send_error, send_json
from agentwharf.auth.caller import Caller
from agentwharf.auth.gatekeeper import Gatekeeper, cross_site_cookie_request
from agentwharf.auth.home_secrets import ADMIN_NAME, private_key
from agentwharf.auth.identities import IdentityService
from agentwharf.auth.tokens import OBO_PREFIX, TokenSigner
from agentwharf.errors import AgentwharfError, NotFound, PermissionDenied, Unavailable
from agentwharf.llm.calls import LlmCalls
from agentwharf.llm.gateway_env import gateway_environment
from agentwharf.llm.runtime import LlmRuntime
from agentwharf.llm.shared_limits import SharedRateCounts
from agentwharf.platform import metrics
from agentwharf.platform.logs import flush_access_log
from agentwharf.platform.server_process import ServerProcess
from agentwharf.serving.gateway import PREFIX as GATEWAY_PREFIX, Gateway
from agentwharf.serving.published import Sealer, StateMirror
from agentwharf.serving.worker_directory import WorkerDirectory
from agentwharf.settings import PlatformSettings
from agentwharf.store.database import Database
from agentwharf.tls import tls_context
from agentwharf.tracing.recorder import Recorder, free_bytes
from agentwharf.tracing.spool import SpoolAppender
from agentwharf.tracing.writer_process import WriterProcess

log = logging.getLogger("agentwharf.gateway_process")

_BENCHMARK_CALLER = Caller(name=ADMIN_NAME, kind="user", is_admin=True)


def spool_dir_of(settings: PlatformSettings, index: int):
    return settings.home.resolve() / f"spool-gateway-{index}"


class GatewayProcess(ServerProcess):
    """Owns a gateway process's parts; ``start``/``stop`` bracket its life (ASGI lifespan)."""

    what = "gateway"

    def __init__(self, settings: PlatformSettings, index: int, control_url: str, environ: dict[str, str]):
        if index < 1:
            raise ValueError("a gateway process's index starts at 1 (the control process's spool is the first)")
        self.settings = settings
        self.index = index
        self.control_url = control_url.rstrip("/")
        self.started_at = 0.0
        self.db = Database(settings.database_uri)
        self.spool_dir = spool_dir_of(settings, index)
        self.recorder = Recorder(SpoolAppender(self.spool_dir, settings.spool_segment_bytes), settings.spool_max_pending_bytes,
                                 settings.min_free_disk_bytes)
        self.writer = WriterProcess(settings.database_uri, self.spool_dir, settings.logs_dir / f"writer-gateway-{index}.log",
                                    settings.writer_batch_size, settings.inference_max_payload_chars, environ,
                                    nice=settings.writer_nice, checkpoint_id=1 + index)
        self.signer: TokenSigner | None = None
        self.identities: IdentityService | None = None
        self.gatekeeper: Gatekeeper | None = None
        self.mirror: StateMirror | None = None
        self.gateway: Gateway | None = None
        self.llm_runtime: LlmRuntime | None = None
        self.in_flight = 0
        #: ``GET /metrics``: this gateway's requests and its spool (the platform's has the rest).
        self.metrics = metrics.PlatformMetrics(self, metrics.SpoolCollector(self.recorder, self.writer))
        self._tasks: list[asyncio.Task] = []

    async def _wait_for_control(self, timeout: float) -> None:
        """The control process migrates the database and creates the home's keys: wait for it."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0, verify=tls_context()) as client:
            while True:
                try:
                    if (await client.get(f"{self.control_url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise Unavailable(f"The control process at {self.control_url} did not answer within {timeout:.0f}s; "
                                      "start it first (agentwharf up)")
                await asyncio.sleep(0.5)

    def _open(self) -> None:
        settings = self.settings
        self.signer = TokenSigner(private_key(settings.secrets_dir / "signing.key"))
        self.identities = IdentityService(self.db, None)
        self.mirror = StateMirror(self.db, Sealer(private_key(settings.secrets_dir / "signing.key")), on_identities=self.identities.reload,
                                  on_llm_route=self._llm_changed, process=f"gateway-{self.index}")
        self.gatekeeper = Gatekeeper(self.identities, self.signer, self.mirror.system_token_live)
        directory = WorkerDirectory(self.mirror, settings.cold_start_timeout)
        self.gateway = Gateway(self.mirror.routes, directory, self.recorder, settings.request_timeout, self._user_token,
                               max_request_bytes=settings.max_request_bytes, body_timeout=settings.body_timeout,
                               start_wait=settings.cold_start_timeout)
        self.gateway.gatekeeper = self.gatekeeper
        self.gateway.metrics = self.metrics
        self.gateway.llm_calls = LlmCalls(settings.llm_request_timeout)
        self.gateway.max_field_chars = settings.trace_max_field_chars
        self.gateway.shadows.max_in_flight = settings.shadow_max_in_flight
        self.mirror.apply(self.mirror.refresh())
        self.gateway.shadows.set_targets(self.mirror.shadows)

    def _state_changed(self) -> None:
        self.gateway.supervisor.forget_gone()
        self.gateway.shadows.set_targets(self.mirror.shadows)

    async def _llm_changed(self, name: str, exists: bool) -> None:
        if exists:
            await self.llm_runtime.reload(name)
        else:
            self.llm_runtime.forget(name)
            self.gateway.limiter.forget(name)

    def _user_token(self, caller: Caller, scopes: tuple[str, ...]) -> str:
        return self.signer.mint(OBO_PREFIX, {"sub": caller.name, "sc": list(scopes)}, self.settings.obo_token_lifetime_seconds)

    async def start(self) -> None:
        started = time.monotonic()
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        await self._wait_for_control(self.settings.mlflow_start_timeout + 60)
        # A gateway killed earlier left records in its spool: its writer stores them first.
        self.recorder.appender.open()
        self.writer.start()
        await asyncio.to_thread(self._open)
        passphrase = private_key(self.settings.secrets_dir / "mlflow-kek.key").hex()
        env = gateway_environment(passphrase, self.settings.llm_allow_private_providers, self.settings.llm_request_timeout)
        self.llm_runtime = LlmRuntime(self.settings.database_uri, env, self.settings.llm_config_refresh_seconds)
        await self.llm_runtime.start()
        self.gateway.llm_runtime = self.llm_runtime
        self._tasks = [asyncio.create_task(self.mirror.run(self.settings.serving_state_interval_seconds,
                                                           after_apply=self._state_changed),
                                           name="serving-state-mirror"),
                       asyncio.create_task(self._watch_spool(), name="spool-monitor"),
                       asyncio.create_task(SharedRateCounts(self.db, self.gateway.limiter, f"gateway-{self.index}",
                                                        self.mirror.routes.any_limited).run(
                           self.settings.serving_state_interval_seconds), name="shared-rate-counts")]
        self.started_at = time.time()
        log.info("gateway %d ready on %s in %.1fs (control %s)", self.index, self.settings.base_url,
                 time.monotonic() - started, self.control_url)

    async def _watch_spool(self) -> None:
        while True:
            self.writer.ensure_running()
            pending, lag = await asyncio.to_thread(self.writer.backlog)
            self.recorder.observe(pending, lag, free_bytes(self.spool_dir))
            flush_access_log()
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        # As the platform: no more requests reach workers, then the writer drains the spool.
        for task in self._tasks:
            task.cancel()
        if self.gateway is not None:
            await self.gateway.supervisor.close()
        if self.mirror is not None:
            await asyncio.to_thread(self.mirror.write_demand, *self.mirror.take_demand())
        self.recorder.appender.close()
        await self.writer.stop(self.settings.writer_drain_timeout)
        if self.llm_runtime is not None:
            await self.llm_runtime.close()
        self.db.dispose()

    def health(self) -> dict:
        return {"status": "ok", "role": "gateway", "index": self.index, "control": self.control_url,
                "pid": os.getpid(), "started_at": self.started_at,
                "endpoints": len(self.mirror.routes.names()) if self.mirror is not None else 0,
                "state_generation": self.mirror.generation if self.mirror is not None else None,
                "spool": {"pending_bytes": self.recorder.pending_estimate(), "records": self.recorder.appender.appended_records,
                          "writer_lag_seconds": round(self.recorder.lag_seconds, 3), "rejected": self.recorder.rejected}}

    async def _route(self, scope, receive, send) -> None:
        path = scope["path"]
        if path == "/healthz":
            await send_json(send, 200, orjson.dumps(self.health()))
        elif not path.startswith((GATEWAY_PREFIX, "/metrics")):
            await send_error(send, NotFound(f"This is a gateway process: it serves {GATEWAY_PREFIX}... (and /metrics) only; "
                                            f"everything else is the control process's, at {self.control_url}"))
        elif self.gateway is None:
            await send_error(send, Unavailable("The gateway is starting"))
        else:
            try:
                scope["agentwharf.caller"] = self._admit(scope)
            except AgentwharfError as error:
                await send_error(send, error)
                return
            if path == "/metrics":  # as on the platform: for any authenticated caller
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", metrics.CONTENT_TYPE.encode())]})
                await send({"type": "http.response.body", "body": self.metrics.render()})
            else:
                await self.gateway(scope, receive, send)

    def _admit(self, scope) -> Caller:
        """As the platform's own admission, for the serving routes (the only ones here)."""
        if self.settings.benchmark_without_auth:
            return _BENCHMARK_CALLER
        caller = self.gatekeeper.authenticate(scope)
        if cross_site_cookie_request(scope):
            raise PermissionDenied("A request signed in with the browser's cookie that changes something "
                                   "must come from the platform's own pages (Origin check)")
        if caller.via == "load":
            raise PermissionDenied("A worker's load credential may only read from MLflow")
        return caller
