"""The Ray Serve worker runtime (``AGENTWHARF_RUNTIME=ray``): each served version is a Ray Serve
application on a Ray cluster (``AGENTWHARF_RAY_ADDRESS``), with ``workload_size`` mapped to
replicas and autoscaling (``min_replicas=0`` when the version scales to zero).

It keeps the supervisor's interface (``ensure``, ``stop``, ``wait_ready``, ``acquire``,
``versions``, ``close``), so the reconciler, the gateway and the console do not know which
runtime runs the models (see ``agentwharf.extensions``). The gateway reaches replicas through
Ray's deployment handle: each request is one streaming call carrying the same frames as a worker
socket (``ray_replica``), so the worker's trace record comes back with the answer and is spooled
before the caller has it, as with local workers.

What differs from local worker processes (README, "Running on more than one machine"):
models run in the cluster's Python (agentwharf and the models' packages installed there), not
in per-model uv environments; Ray restarts crashed replicas and scales them; worker logs are in
Ray's logs; a client that leaves a stream does not stop the agent early (its record still comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from agentwharf.errors import DeploymentFailed, InvalidConfiguration, Unavailable
from agentwharf.serving import protocol, worker_logs
from agentwharf.serving.supervisor import Replica, ServedVersion, WorkerSpec, _entity, _failed_message, wait_for_start, wait_until_ready
from agentwharf.serving.worker_client import CONNECTION_LOST, Reply, WorkerGone, _Call, first_answer

log = logging.getLogger("agentwharf.ray")

#: Ray's namespace for agentwharf's applications on a shared cluster.
NAMESPACE = "agentwharf"
#: Ray Serve's own window for averaging a deployment's load (``look_back_period_s``).
RAY_LOOK_BACK_SECONDS = 30.0


def application_name(key: str) -> str:
    """A served version's Ray Serve application: ``endpoint/entity`` with Ray-safe characters."""
    return "aw-" + re.sub(r"[^A-Za-z0-9_.-]", "--", key)


#: The platform process's own variables that describe its machine, not the replica's node.
_NODE_LOCAL = {"PATH", "HOME", "PWD", "OLDPWD", "SHELL", "SHLVL", "HOSTNAME", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME",
               "TMPDIR", "_"}


def replica_environment(base_env: dict[str, str], spec: WorkerSpec) -> dict[str, str]:
    """What a replica's process gets: the worker's variables (MLflow's URI, the version's own),
    without those that only make sense on the platform's machine or are Ray's own."""
    env = {k: v for k, v in base_env.items() if k not in _NODE_LOCAL and not k.startswith(("LD_", "RAY_"))}
    return {**env, **dict(spec.env)}


def deployment_options(spec: WorkerSpec, threads: int, replica_cpus: float, base_env: dict[str, str],
                       idle_seconds: float) -> dict:
    """Ray Serve options of one served version: the workload's replicas, as many as local worker
    processes would be (a version that scales to zero autoscales between none and that many,
    aiming at an eighth of a replica's concurrency in flight each, and goes to none after
    ``idle_seconds`` without load), ``threads`` requests at once per replica, and the worker's
    environment. A replica whose model fails to load fails the deploy at once, as a local worker
    does (Ray would try the constructor three times per replica): the same model loads no
    better on a second try, and the deployer waits for the error instead of for the retries."""
    replicas = max(1, spec.replicas)
    autoscaling = {"min_replicas": 0 if spec.scale_to_zero else replicas, "max_replicas": replicas,
                   "initial_replicas": replicas, "target_ongoing_requests": max(1, threads // 8),
                   "downscale_delay_s": idle_seconds, "downscale_to_zero_delay_s": idle_seconds, "upscale_delay_s": 0,
                   # Ray averages the load over this window (30 s by default) before the delays
                   # above even start: an idle time shorter than it would not be honoured.
                   "look_back_period_s": max(1.0, min(RAY_LOOK_BACK_SECONDS, idle_seconds))}
    return {"name": "agent", "max_ongoing_requests": threads, "autoscaling_config": autoscaling, "max_constructor_retry_count": 1,
            "ray_actor_options": {"num_cpus": replica_cpus, "runtime_env": {"env_vars": replica_environment(base_env, spec)}}}


class RayConnection:
    """The gateway's end of a served version on Ray: ``WorkerConnection``'s calls, each request
    a streaming call on the application's handle (Ray picks the replica)."""

    def __init__(self, handle, hello: dict):
        self._handle = handle.options(stream=True)
        self.hello = hello
        self.in_flight = 0
        self.closed = False
        self._ids = itertools.count(1)
        self._streams: dict[int, object] = {}

    async def request(self, meta: dict, body: bytes, timeout: float) -> Reply:
        """As ``WorkerConnection.request``: the first answer frame, the rest pumped in the background.

        Raises:
            WorkerGone: the application is gone or the call failed before an answer.
            asyncio.TimeoutError: no answer within ``timeout`` (the call is cancelled).
        """
        if self.closed:
            raise WorkerGone("the Ray application is stopped")
        call = _Call(next(self._ids))
        frames = self._handle.frames.remote(protocol.encode_request(call.stream_id, meta, body))
        self._streams[call.stream_id] = frames
        asyncio.create_task(self._pump(call, frames), name=f"ray-call-{call.stream_id}")
        return await first_answer(call, timeout, self.cancel, "the Ray replica failed before answering")

    async def _pump(self, call: _Call, frames) -> None:
        try:
            async for frame in frames:
                _length, _sid, kind, status = protocol.HEADER.unpack_from(frame)
                payload = frame[protocol.HEADER_SIZE:]
                if kind == protocol.RECORD:
                    call.record = payload
                    continue
                call.queue.put_nowait((kind, status, payload))
                if kind in (protocol.RESPONSE, protocol.STREAM_END):
                    return
        except asyncio.CancelledError:
            pass
        except Exception as error:  # a replica that died mid-call, or Ray refusing the call
            log.warning("a call to a Ray replica failed: %s", error)
        finally:
            self._streams.pop(call.stream_id, None)
        call.queue.put_nowait((CONNECTION_LOST, 0, b""))

    def cancel(self, stream_id: int, forget: bool = False) -> None:
        """A client that left a stream: the agent is not interrupted (Ray cannot reach the one
        replica's call without ending it), so its record still arrives. ``forget`` (a timeout)
        ends the call."""
        if forget and (frames := self._streams.pop(stream_id, None)) is not None:
            frames.cancel()

    async def wait_closed(self) -> None:
        while not self.closed:
            await asyncio.sleep(3600)

    async def close(self) -> None:
        self.closed = True
        for frames in list(self._streams.values()):
            frames.cancel()


class RayRuntime:
    """Served versions as Ray Serve applications; the supervisor's interface."""

    def __init__(self, address: str | None, threads: int, max_field_chars: int, base_env: dict[str, str],
                 load_credential: Callable[[str], str], logs_dir: Path, *, replica_cpus: float, start_timeout: float,
                 cold_start_timeout: float, idle_seconds: float):
        self.address = address
        self.threads = threads
        self.max_field_chars = max_field_chars
        self.base_env = base_env
        self.load_credential = load_credential
        self.logs_dir = logs_dir
        self.replica_cpus = replica_cpus
        self.start_timeout = start_timeout
        self.cold_start_timeout = cold_start_timeout
        self.idle_seconds = idle_seconds
        self.versions: dict[str, ServedVersion] = {}
        self._connected = False

    # -- lifecycle -------------------------------------------------------------------------

    def start_background(self) -> None:
        """Nothing to watch here: Ray restarts replicas and scales idle ones to zero."""

    async def connect(self) -> None:
        """Join the Ray cluster and start Serve there (no HTTP proxy: the gateway uses handles).

        Raises:
            InvalidConfiguration: Ray is not installed, or no cluster answers at the address.
        """
        if self._connected:
            return
        try:
            await asyncio.to_thread(_connect, self.address)
        except ImportError:
            raise InvalidConfiguration("AGENTWHARF_RUNTIME=ray needs Ray Serve in the platform's Python: "
                                       "pip install 'agentwharf[ray]'") from None
        except Exception as failure:  # Ray's ConnectionError and friends
            raise InvalidConfiguration(f"AGENTWHARF_RUNTIME=ray: cannot join the Ray cluster at "
                                       f"{self.address or 'auto'} (AGENTWHARF_RAY_ADDRESS): {failure}") from None
        self._connected = True
        log.info("joined the Ray cluster at %s; Serve is running", self.address or "auto")

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(key) for key in list(self.versions)), return_exceptions=True)

    # -- desired state ---------------------------------------------------------------------

    def ensure(self, spec: WorkerSpec) -> ServedVersion:
        current = self.versions.get(spec.key)
        if current is not None and current.spec == spec and current.state not in ("STOPPED", "FAILED"):
            return current
        version = ServedVersion(spec=spec)
        self.versions[spec.key] = version
        version.task = asyncio.create_task(self._deploy(version), name=f"ray-deploy-{spec.key}")
        return version

    async def stop(self, key: str) -> None:
        version = self.versions.pop(key, None)
        if version is None:
            return
        version.state = "STOPPED"
        if version.task is not None and not version.task.done():
            version.task.cancel()
        for replica in version.replicas:
            if replica.connection is not None:
                await replica.connection.close()
        with contextlib.suppress(Exception):  # already gone from the cluster
            await asyncio.to_thread(_delete, application_name(key))
        version.notify()

    async def wait_ready(self, key: str, timeout: float) -> ServedVersion:
        """As ``Supervisor.wait_ready``."""
        return await wait_until_ready(self.versions, key, timeout)

    async def acquire(self, key: str) -> RayConnection:
        """The version's handle; a version still deploying is waited for (cold-start timeout)."""
        version = self.versions.get(key)
        if version is None:
            raise Unavailable(f"{key} is not being served")
        version.last_used = time.monotonic()
        if version.state == "READY":
            return version.replicas[0].connection
        if version.state == "STARTING":
            await wait_for_start(self.versions, key, self.cold_start_timeout)
            return await self.acquire(key)
        if version.state == "FAILED":
            raise DeploymentFailed(_failed_message(key))
        raise Unavailable(f"{_entity(key)} is {version.state.lower()}; retry shortly.")

    def build_log(self, key: str) -> Path:
        endpoint, _, entity = key.partition("/")
        return worker_logs.environment_log_path(self.logs_dir, endpoint, entity)

    # -- Ray -------------------------------------------------------------------------------

    async def _deploy(self, version: ServedVersion) -> None:
        spec = version.spec
        name = application_name(spec.key)
        endpoint, _, entity = spec.key.partition("/")
        try:
            await self.connect()
            token = await asyncio.to_thread(self.load_credential, spec.key) if self.load_credential else ""
            options = deployment_options(spec, self.threads, self.replica_cpus, self.base_env, self.idle_seconds)
            log.info("deploying %s to Ray as application %s (%s)", spec.key, name, options["autoscaling_config"])
            handle = await asyncio.wait_for(asyncio.to_thread(
                _run, name, options, (spec.model_uri, token, self.threads, self.max_field_chars)), self.start_timeout)
            hello = orjson.loads(await handle.hello.remote())
        except asyncio.CancelledError:
            raise
        except Exception as failure:  # the model failed to load in its replica, or Ray refused
            version.state = "FAILED"
            version.error = f"The Ray Serve application for {spec.model_uri} failed to start: {_ray_message(failure)}"
            log.error("%s: %s", spec.key, version.error)
            version.notify()
            return
        version.replicas = [Replica(index=0, ready_path="", log_path=self.logs_dir / "workers" / endpoint / f"{entity}-0.log",
                                    connection=RayConnection(handle, hello))]
        version.state, version.ever_ready = "READY", True
        log.info("%s answers on Ray (replica pid %s)", spec.key, hello.get("pid"))
        version.notify()


def _ray_message(failure: BaseException) -> str:
    if isinstance(failure, asyncio.TimeoutError):
        return "it did not become ready in time"
    text = str(failure).strip() or type(failure).__name__
    return text[-4000:]  # Ray's messages carry the replica's whole traceback; its end says why


# Ray's own calls, blocking: run in a thread so the event loop keeps serving.

def _connect(address: str | None) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(address=address or "auto", namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"location": "NoServer"})


def _run(name: str, options: dict, args: tuple):
    from ray import serve

    from agentwharf.serving.ray_replica import AgentReplica

    app = serve.deployment(AgentReplica).options(**options).bind(*args)
    try:
        serve.run(app, name=name, route_prefix=None)
    except Exception as failure:
        raise RuntimeError(_deployment_message(name) or str(failure)) from None
    return serve.get_app_handle(name)


def _deployment_message(name: str) -> str | None:
    """Why Ray Serve could not start the application: its deployment's message carries the
    replica's own error (the model's load failure), which ``serve.run``'s exception does not."""
    from ray import serve

    try:
        application = serve.status().applications[name]
        return "; ".join(d.message for d in application.deployments.values() if d.message) or application.message
    except Exception:  # the status itself is unavailable: fall back to serve.run's words
        return None


def _delete(name: str) -> None:
    from ray import serve

    serve.delete(name)
