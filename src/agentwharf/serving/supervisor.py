"""The supervisor: the one owner of every model worker process.

For each served version it first prepares the Python environment its model runs in (see
``environments``), then keeps ``replicas`` worker processes running, restarts a crashed one
with exponential back-off, stops an idle scale-to-zero version and starts it again on demand.
The gateway asks it for a connection (``acquire``); the control plane tells it what should run
(``ensure`` / ``stop``). Processes are started through ``WorkerLauncher`` so a test can see every
OS call in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentwharf.children import die_with_parent, log_tail, open_log
from agentwharf.serving import transport, worker_logs
from agentwharf.errors import AgentwharfError, DeploymentFailed, Unavailable
from agentwharf.serving.env_build import writing_bytecode
from agentwharf.serving.environments import PLATFORM_RUNTIME, Environments, EnvironmentBuildFailed, Runtime
from agentwharf.serving.protocol import ProtocolError
from agentwharf.serving.spares import Spare, SpareKey, SparePool, can_take_over, watch_until_ready
from agentwharf.serving.worker_client import WorkerConnection

log = logging.getLogger("agentwharf.supervisor")

#: A worker that ran this long before crashing restarts with the shortest back-off again.
STABLE_AFTER_SECONDS = 60.0


@dataclass(frozen=True)
class WorkerSpec:
    """What to run for one served version; a change of spec restarts its workers."""

    key: str
    model_uri: str
    replicas: int
    env: tuple[tuple[str, str], ...] = ()
    scale_to_zero: bool = False
    #: ``uv`` (the model's own environment), ``local`` (the platform's), None (the default).
    env_manager: str | None = None


@dataclass
class Replica:
    index: int
    #: The file the worker makes in the run folder once it listens (its model loaded): its Unix
    #: socket, or on TCP the ready file naming the address it bound.
    ready_path: str
    log_path: Path
    #: What the worker is told to listen on: ``unix:<ready_path>`` or ``tcp://<bind host>:0``.
    listen: str = ""
    #: The TCP handshake's secret, this worker's own (empty on a Unix socket). Handed to the
    #: worker on stdin, never in argv or the environment, and never logged (``repr=False``).
    secret: str = field(default="", repr=False)
    #: Where the worker fetches the model's files, a folder beside its socket: removed when
    #: the worker stops or is replaced, and by the next platform if this one was killed.
    model_dir: str = ""
    #: Where the worker answers, once it listens (TCP: the port it took).
    address: transport.Address | None = None
    process: asyncio.subprocess.Process | None = None
    connection: WorkerConnection | None = None
    restarts: int = 0
    task: asyncio.Task | None = None


@dataclass
class ServedVersion:
    """Runtime state of one served version. ``state`` is one of BUILDING (its environment),
    STARTING, READY, FAILED, RESTARTING, SCALED_TO_ZERO, STOPPED."""

    spec: WorkerSpec
    replicas: list[Replica] = field(default_factory=list)
    state: str = "STARTING"
    error: str | None = None
    #: What it is doing now, in words (the environment build's last step).
    detail: str | None = None
    #: The Python its workers run with, once prepared (kept across restarts and cold starts).
    runtime: Runtime | None = None
    task: asyncio.Task | None = None
    #: In its workers' socket names: a version replacing another (a changed spec) starts while
    #: the old one stops, and the old one's cleanup must never remove the new one's sockets.
    nonce: str = field(default_factory=lambda: secrets.token_hex(2))
    last_used: float = field(default_factory=time.monotonic)
    ever_ready: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def ready_connections(self) -> list[WorkerConnection]:
        return [r.connection for r in self.replicas if r.connection is not None and not r.connection.closed]

    def notify(self) -> None:
        """Wake everyone waiting on a state change (deploys, cold starts)."""
        self.changed.set()
        self.changed = asyncio.Event()


class WorkerLauncher:
    """Starts and stops worker OS processes (every OS call of the supervisor's, in one place)."""

    def __init__(self, concurrency: int, base_env: dict[str, str], load_credential=None, max_field_chars: int | None = None,
                 worker_pythonpath: Callable[[], str] | None = None, spares: int = 0):
        #: Requests each worker runs at once (``PlatformSettings.worker_concurrency``).
        self.concurrency = concurrency
        #: Bound of each value in a request's trace record (see ``tracing.record``).
        self.max_field_chars = max_field_chars
        #: Where a worker in a model's own environment imports the runtime from (PYTHONPATH).
        self.worker_pythonpath = worker_pythonpath
        self.base_env = base_env
        #: key -> a short-lived token to read the model from MLflow; handed over on stdin, not
        #: in the environment, so the model's code (which may read /proc/self/environ) never sees it.
        self.load_credential = load_credential
        #: Warm spare workers per runtime (``PlatformSettings.worker_spares``; see ``spares``).
        self.spares = SparePool(spares, self._spawn_spare, self.stop)

    async def start(self, spec: WorkerSpec, replica: Replica, runtime: Runtime = PLATFORM_RUNTIME) -> asyncio.subprocess.Process:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(replica.ready_path)
        # A crashed predecessor's files, off the event loop: a big model's take a while to delete.
        await asyncio.to_thread(remove_model_files, replica)
        pythonpath = self.worker_pythonpath() if runtime.environment is not None and self.worker_pythonpath else None
        key = (runtime.python, pythonpath)
        spare = self.spares.take(key) if can_take_over(spec.env) else None
        with open_log(replica.log_path) as log_file:
            # worker_logs finds the current run by this marker (the logs and build-logs APIs).
            log_file.write(b"\n" + worker_logs.START_MARKER
                           + f"{spec.model_uri} at {time.strftime('%Y-%m-%d %H:%M:%S')} with {runtime.python} ---\n".encode())
            log_file.flush()
            if spare is None:
                env = {**self.base_env, **dict(spec.env)}
                if pythonpath is not None:
                    env = {**writing_bytecode(env), "PYTHONPATH": pythonpath}
                process = await asyncio.create_subprocess_exec(
                    runtime.python, "-m", "agentwharf.serving.worker", *self._arguments(spec, replica, runtime),
                    stdin=asyncio.subprocess.PIPE, stdout=log_file, stderr=log_file, env=env,
                    preexec_fn=die_with_parent,
                )
            else:
                process = spare.process
                log.info("%s replica %d: spare worker %d takes over", spec.key, replica.index, process.pid)
        await self._hand_over(process, spec, replica, runtime, spare is not None)
        self.spares.refill(key, after=lambda: self._listening(process, replica))
        return process

    @staticmethod
    async def _listening(process: asyncio.subprocess.Process, replica: Replica) -> None:
        """Return once the worker listens (its ready path exists) or has exited."""
        while process.returncode is None and not os.path.exists(replica.ready_path):
            await asyncio.sleep(0.1)

    def _arguments(self, spec: WorkerSpec, replica: Replica, runtime: Runtime) -> list[str]:
        """The worker's arguments (a fresh worker's argv, a spare's assignment)."""
        arguments = ["--listen", replica.listen or f"unix:{replica.ready_path}",
                     "--model-uri", spec.model_uri, "--concurrency", str(self.concurrency)]
        if self.max_field_chars:
            arguments += ["--max-field-chars", str(self.max_field_chars)]
        if runtime.model_path:
            arguments += ["--model-path", runtime.model_path]
        elif replica.model_dir:
            arguments += ["--model-dir", replica.model_dir]
        if replica.listen.startswith("tcp:"):
            arguments += ["--ready-file", replica.ready_path]
        return arguments

    async def _hand_over(self, process: asyncio.subprocess.Process, spec: WorkerSpec, replica: Replica,
                         runtime: Runtime, spare: bool) -> None:
        """Write the worker's stdin: credential and secret (a fresh worker), or the whole
        assignment (a spare), then close it."""
        try:
            # Even a worker whose model files were fetched for it reads its experiment with this.
            credential = self.load_credential(spec.key) if self.load_credential is not None else ""
            if spare:
                assignment = {"argv": self._arguments(spec, replica, runtime), "env": dict(spec.env),
                              "log": str(replica.log_path), "credential": credential, "secret": replica.secret}
                process.stdin.write(json.dumps(assignment).encode() + b"\n")
            else:
                process.stdin.write(credential.encode() + b"\n" + replica.secret.encode() + b"\n")
            with contextlib.suppress(ConnectionError):
                await process.stdin.drain()
            process.stdin.close()
        except BaseException:
            # A worker that never got its credential would wait for it forever, unsupervised.
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise

    async def _spawn_spare(self, key: SpareKey) -> Spare:
        """A worker started ahead of need: base environment only, no credential (``spare_worker``)."""
        python, pythonpath = key
        env = dict(self.base_env)
        if pythonpath is not None:
            env = {**writing_bytecode(env), "PYTHONPATH": pythonpath}
        process = await asyncio.create_subprocess_exec(
            python, "-m", "agentwharf.serving.worker", "--spare",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
            preexec_fn=die_with_parent,
        )
        spare = Spare(process)
        spare.watch = asyncio.create_task(watch_until_ready(spare), name=f"spare-{process.pid}")
        return spare

    async def close(self) -> None:
        """Stop the spares (the workers themselves are stopped by the supervisor)."""
        await self.spares.close()

    async def stop(self, process: asyncio.subprocess.Process, grace: float = 10.0) -> None:
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), grace)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class Supervisor:
    def __init__(
        self,
        launcher: WorkerLauncher,
        run_dir: Path,
        logs_dir: Path,
        *,
        environments: Environments | None = None,
        start_timeout: float,
        backoff_min: float,
        backoff_max: float,
        idle_seconds: float,
        cold_start_timeout: float,
        worker_transport: str = "unix",
        bind_host: str = "127.0.0.1",
    ):
        self.launcher = launcher
        #: How the gateway reaches the workers: ``unix`` sockets in ``run_dir`` or ``tcp`` on
        #: ``bind_host`` (``PlatformSettings.worker_transport``, ``worker_bind_host``).
        self.worker_transport = worker_transport
        self.bind_host = bind_host
        #: None: every version runs with the platform's own Python (unit tests).
        self.environments = environments
        self.run_dir = run_dir
        self.logs_dir = logs_dir
        self.start_timeout = start_timeout
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.idle_seconds = idle_seconds
        self.cold_start_timeout = cold_start_timeout
        self.versions: dict[str, ServedVersion] = {}
        self._idle_task: asyncio.Task | None = None
        self._closing = False

    # -- lifecycle -------------------------------------------------------------------------

    def start_background(self) -> None:
        self._remove_stale_worker_files()
        if self.environments is not None:
            self.environments.remove_model_files()
        self._idle_task = asyncio.create_task(self._scale_idle_to_zero(), name="supervisor-idle")

    def _remove_stale_worker_files(self) -> None:
        """Sockets, ready files and model files a platform that was killed left behind: their
        workers died with it (one platform per home, by its pid file), and their names are not
        reused."""
        for stale in self.run_dir.glob("w-*") if self.run_dir.is_dir() else ():
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    stale.unlink()

    async def close(self) -> None:
        self._closing = True
        if self._idle_task:
            self._idle_task.cancel()
        await asyncio.gather(*(self.stop(key) for key in list(self.versions)), return_exceptions=True)
        await self.launcher.close()

    # -- desired state ---------------------------------------------------------------------

    def ensure(self, spec: WorkerSpec) -> ServedVersion:
        """Make ``spec`` run; a no-op if it already runs with the same spec."""
        current = self.versions.get(spec.key)
        if current is not None and current.spec == spec and current.state not in ("STOPPED", "FAILED"):
            return current
        if current is not None:
            asyncio.create_task(self._stop_version(current), name=f"stop-{spec.key}")
        version = ServedVersion(spec=spec)
        self.versions[spec.key] = version
        self._start_replicas(version)
        return version

    async def stop(self, key: str) -> None:
        version = self.versions.pop(key, None)
        if version is not None:
            await self._stop_version(version)

    async def wait_ready(self, key: str, timeout: float) -> ServedVersion:
        """Wait until the version answers.

        Raises:
            DeploymentFailed: its model failed to load; the message carries the worker's log tail.
            asyncio.TimeoutError: not ready within ``timeout``.
        """
        return await wait_until_ready(self.versions, key, timeout)

    # -- the gateway's side ----------------------------------------------------------------

    async def acquire(self, key: str) -> WorkerConnection:
        """The least busy ready worker of ``key``. A version still starting (or scaled to zero,
        which this wakes) is waited for, up to the cold-start timeout.

        Raises:
            DeploymentFailed: the version's model failed to load; retrying will not help.
            Unavailable: no worker can answer now (crashed and restarting, stopped, too slow to start).
        """
        version = self.versions.get(key)
        if version is None:
            raise Unavailable(f"{key} is not being served")
        version.last_used = time.monotonic()
        connections = version.ready_connections()
        if connections:
            return min(connections, key=_in_flight) if len(connections) > 1 else connections[0]
        if version.state == "SCALED_TO_ZERO":
            log.info("cold start of %s", key)
            self._start_replicas(version)
        if version.state in ("BUILDING", "STARTING"):
            await wait_for_start(self.versions, key, self.cold_start_timeout)
            return await self.acquire(key)
        if version.state == "FAILED":
            raise DeploymentFailed(_failed_message(key))
        raise Unavailable(_unavailable_message(key, version))

    def note_demand(self, key: str, idle_for: float, wake: bool) -> None:
        """A gateway process sent ``key`` a request ``idle_for`` seconds ago, and (``wake``) has
        one waiting for it: its idle time counts from then, and a version scaled to zero starts."""
        version = self.versions.get(key)
        if version is None:
            return
        version.last_used = max(version.last_used, time.monotonic() - idle_for)
        if wake and version.state == "SCALED_TO_ZERO":
            log.info("cold start of %s (for a gateway process)", key)
            self._start_replicas(version)

    # -- processes -------------------------------------------------------------------------

    def _new_replica(self, version: ServedVersion, index: int) -> Replica:
        """A replica's names (log, socket or ready file) and, on TCP, its own new secret."""
        endpoint, _, entity = version.spec.key.partition("/")
        digest = hashlib.sha1(version.spec.key.encode()).hexdigest()[:12]
        stem = str(self.run_dir / f"w-{digest}-{index}-{version.nonce}")
        log_path = self.logs_dir / "workers" / endpoint / f"{entity}-{index}.log"
        if self.worker_transport == "tcp":
            listen = str(transport.TcpAddress(self.bind_host, 0))
            return Replica(index, f"{stem}.addr", log_path, listen, secret=secrets.token_hex(32), model_dir=f"{stem}.model")
        return Replica(index, f"{stem}.sock", log_path, f"unix:{stem}.sock", model_dir=f"{stem}.model")

    def build_log(self, key: str) -> Path:
        """Where the environment build of a served version logs."""
        endpoint, _, entity = key.partition("/")
        return worker_logs.environment_log_path(self.logs_dir, endpoint, entity)

    def _start_replicas(self, version: ServedVersion) -> None:
        version.state = "STARTING"
        version.error = None
        # New names too: the replicas of a scale to zero may still be stopping (and removing theirs).
        version.nonce = secrets.token_hex(2)
        version.replicas = [self._new_replica(version, i) for i in range(version.spec.replicas)]
        version.task = asyncio.create_task(self._prepare_and_start(version), name=f"start-{version.spec.key}")
        version.notify()

    async def _prepare_and_start(self, version: ServedVersion) -> None:
        """The version's environment first (once: restarts and cold starts reuse it), then
        its workers."""
        if version.runtime is None:
            try:
                version.runtime = await self._prepare(version)
            except Exception as error:  # noqa: BLE001 - nobody awaits this task: say it, or it is lost
                self._fail_start(version, error)
                return
            if version.runtime is None:
                return
        for replica in version.replicas:
            replica.task = asyncio.create_task(self._run_replica(version, replica), name=f"replica-{version.spec.key}-{replica.index}")

    async def _prepare(self, version: ServedVersion) -> Runtime | None:
        if self.environments is None:
            return PLATFORM_RUNTIME

        def progress(step: str) -> None:
            version.detail = step
            version.notify()

        if self.environments.manager(version.spec.env_manager) != "local":
            version.state = "BUILDING"
            progress("Preparing the model's environment with uv.")
        try:
            runtime = await self.environments.prepare(version.spec.key, version.spec.model_uri, version.spec.env_manager,
                                                      self.build_log(version.spec.key), progress)
        except EnvironmentBuildFailed as failure:
            version.state, version.error, version.detail = "FAILED", failure.message, None
            log.error("%s: environment build failed", version.spec.key)
            version.notify()
            return None
        version.state, version.detail = "STARTING", None
        version.notify()
        return runtime

    async def _run_replica(self, version: ServedVersion, replica: Replica) -> None:
        backoff = self.backoff_min
        while True:
            started = time.monotonic()
            try:
                replica.process = await self.launcher.start(version.spec, replica, version.runtime or PLATFORM_RUNTIME)
                replica.connection = await self._connect_when_ready(replica)
            except Exception as error:  # noqa: BLE001 - the OS refusing a process under load, say
                if not version.ever_ready:
                    self._fail_start(version, error)
                    return
                log.exception("worker %s-%d could not be started; retrying", version.spec.key, replica.index)
                if replica.process is not None:
                    await self.launcher.stop(replica.process)
                replica.connection = None
            if replica.connection is None:
                if not version.ever_ready:
                    # A model that never loaded will not load on retry: fail the deploy now,
                    # with the worker's own words.
                    await self.launcher.stop(replica.process)
                    self._mark_failed(version, replica)
                    return
            else:
                self._refresh_state(version)
                await self._hold_connection(version, replica)
            code = replica.process.returncode if replica.process is not None else None
            log.warning("worker %s-%d exited with code %s", version.spec.key, replica.index, code)
            self._refresh_state(version)
            if time.monotonic() - started > STABLE_AFTER_SECONDS:
                backoff = self.backoff_min
            replica.restarts += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.backoff_max)

    async def _hold_connection(self, version: ServedVersion, replica: Replica) -> None:
        """Keep the gateway's connection to a running worker until the worker exits. A
        connection that breaks while the process lives (a bad frame, say) is opened again,
        or, if that fails, the worker is stopped so it restarts: a worker is never left alive
        but unreachable."""
        while True:
            exited = asyncio.ensure_future(replica.process.wait())
            lost = asyncio.ensure_future(replica.connection.wait_closed())
            await asyncio.wait({exited, lost}, return_when=asyncio.FIRST_COMPLETED)
            lost.cancel()
            if exited.done():
                replica.connection = None
                return
            exited.cancel()
            log.warning("connection to worker %s-%d broke while it runs; reconnecting", version.spec.key, replica.index)
            replica.connection = None
            self._refresh_state(version)
            try:
                replica.connection = await WorkerConnection.open(replica.address, replica.secret)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ProtocolError) as error:
                log.error("cannot reconnect to worker %s-%d (%s); restarting it", version.spec.key, replica.index, error)
                await self.launcher.stop(replica.process)
                return
            self._refresh_state(version)

    async def _connect_when_ready(self, replica: Replica) -> WorkerConnection | None:
        """Poll for the socket (or TCP ready file) until the worker listens (model loaded) or
        the process exits."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if replica.process.returncode is not None:
                return None
            if os.path.exists(replica.ready_path):
                try:
                    replica.address = self._address_of(replica)
                    return await WorkerConnection.open(replica.address, replica.secret)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError):
                    pass  # not listening yet, or a half-written greeting: ask again
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(replica.process.wait(), 0.05)
        await self.launcher.stop(replica.process)
        return None

    @staticmethod
    def _address_of(replica: Replica) -> transport.Address:
        """Where a worker that made its ready file answers."""
        if replica.listen.startswith("tcp:"):
            return transport.read_ready_file(replica.ready_path)
        return transport.UnixAddress(replica.ready_path)

    def _mark_failed(self, version: ServedVersion, replica: Replica) -> None:
        tail = log_tail(replica.log_path)
        version.state = "FAILED"
        version.error = f"The model worker for {version.spec.model_uri} failed to start. Worker log (tail):\n{tail}"
        log.error("%s failed to start", version.spec.key)
        version.notify()

    def _fail_start(self, version: ServedVersion, error: Exception) -> None:
        """A start that raised. The tasks that start a version are never awaited, so an error
        left in one would be lost and the version would stay STARTING with nothing running:
        every request to it would wait out the cold-start timeout."""
        log.error("%s: starting its workers failed", version.spec.key, exc_info=error)
        reason = error.message if isinstance(error, AgentwharfError) else f"{type(error).__name__}: {error}"
        version.state, version.detail = "FAILED", None
        version.error = f"Starting the workers of {version.spec.model_uri} failed: {reason}"
        version.notify()

    def _refresh_state(self, version: ServedVersion) -> None:
        if version.state in ("FAILED", "STOPPED", "SCALED_TO_ZERO"):
            return
        connected = len(version.ready_connections())
        # A first start (a deploy) is done when every worker answers, so traffic never lands
        # on the first one alone; once it has served, one live worker keeps the version up
        # while the others (re)start, which also lets a cold start answer on its first worker.
        if connected == len(version.replicas) or (version.ever_ready and connected):
            if version.state != "READY":
                # Idle time counts from when it answers: a cold start slower than the idle
                # timeout must not be scaled back to zero before its waiting request is served.
                version.last_used = time.monotonic()
            version.state = "READY"
            version.ever_ready = True
        elif version.ever_ready:
            version.state = "RESTARTING"
        version.notify()

    async def _stop_version(self, version: ServedVersion, final_state: str = "STOPPED") -> None:
        version.state = final_state
        # The replicas being stopped, fixed now: a cold start may begin while they stop (a
        # request right after a scale to zero) and gives the version new ones, which stay.
        replicas = version.replicas
        tasks = [r.task for r in replicas if r.task is not None and not r.task.done()]
        if version.task is not None and not version.task.done():
            tasks.append(version.task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for replica in replicas:
            if replica.connection is not None:
                await replica.connection.close()
                replica.connection = None
            if replica.process is not None:
                await self.launcher.stop(replica.process)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(replica.ready_path)
            await asyncio.to_thread(remove_model_files, replica)
        if final_state == "STOPPED":
            await asyncio.to_thread(self._forget_fetched_model, version)
        version.notify()

    def _forget_fetched_model(self, version: ServedVersion) -> None:
        """The model files its environment's build fetched, unless a version still served (the
        one replacing it, another endpoint's of the same model) may start workers from them."""
        model_path = version.runtime.model_path if version.runtime is not None else None
        if model_path is None or self.environments is None:
            return
        if any(other.spec.model_uri == version.spec.model_uri for other in self.versions.values() if other is not version):
            return
        self.environments.remove_model_files(model_path)

    async def _scale_idle_to_zero(self) -> None:
        while not self._closing:
            await asyncio.sleep(min(5.0, max(0.2, self.idle_seconds / 4)))
            now = time.monotonic()
            for version in list(self.versions.values()):
                busy = any(c.in_flight for c in version.ready_connections())
                if version.spec.scale_to_zero and version.state == "READY" and not busy and now - version.last_used > self.idle_seconds:
                    log.info("scaling %s to zero after %.0fs idle", version.spec.key, now - version.last_used)
                    await self._stop_version(version, "SCALED_TO_ZERO")


async def wait_until_ready(versions: dict[str, ServedVersion], key: str, timeout: float) -> ServedVersion:
    """Wait until the served version ``key`` of a runtime's ``versions`` answers (any runtime:
    each ``notify``-s its versions' state changes).

    Raises:
        DeploymentFailed: it failed to start (its error says why), or is no longer served.
        asyncio.TimeoutError: not ready within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        version = versions.get(key)
        if version is None:
            raise DeploymentFailed(f"{key} is no longer being served")
        if version.state == "READY":
            return version
        if version.state == "FAILED":
            raise DeploymentFailed(version.error or f"{key} failed to start")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise asyncio.TimeoutError
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(version.changed.wait(), remaining)


async def wait_for_start(versions: dict[str, ServedVersion], key: str, timeout: float) -> None:
    """A request's wait for a version that is starting (any runtime), in the caller's words.

    Raises:
        DeploymentFailed: its model failed to load (the load error stays for CAN_MANAGE).
        Unavailable: not ready within ``timeout``.
    """
    try:
        await wait_until_ready(versions, key, timeout)
    except DeploymentFailed:
        raise DeploymentFailed(_failed_message(key)) from None
    except asyncio.TimeoutError:
        raise Unavailable(f"{_entity(key)} did not start within {timeout:.0f}s; retry shortly") from None


def remove_model_files(replica: Replica) -> None:
    """The model files a replica's worker fetched (its process has stopped, or never started)."""
    if replica.model_dir:
        shutil.rmtree(replica.model_dir, ignore_errors=True)


def _in_flight(connection: WorkerConnection) -> int:
    return connection.in_flight


def _entity(key: str) -> str:
    endpoint, _, entity = key.partition("/")
    return f"Served entity {entity!r} of endpoint {endpoint!r}"


def _failed_message(key: str) -> str:
    # The load error (a worker log tail) is for the endpoint's managers only: it is in the
    # endpoint's state for CAN_MANAGE, never in an answer to a caller.
    return (f"{_entity(key)} is in state DEPLOYMENT_FAILED: its model failed to load, and retrying will not help. "
            "Users with CAN_MANAGE on the endpoint see the load error in its state.")


def _unavailable_message(key: str, version: ServedVersion) -> str:
    if version.state == "RESTARTING":
        return f"The worker of {_entity(key).lower()} crashed and is restarting; retry shortly."
    return f"{_entity(key)} is {version.state.lower().replace('_', ' ')}; retry shortly."
