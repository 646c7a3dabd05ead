"""Running the platform: in the foreground, in the background, and stopping it.

A running platform writes ``<home>/platform.pid`` holding its pid and base URL; ``down`` and
``status`` find it there. SIGTERM and Ctrl-C go through uvicorn's graceful shutdown, which runs
the platform's lifespan shutdown: workers are reaped, then MLflow's server stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass

import httpx
import orjson

from agentwharf.children import log_tail, open_log
from agentwharf.platform import preflight
from agentwharf.platform.open_files import ensure_open_files
from agentwharf.settings import PlatformSettings

log = logging.getLogger("agentwharf.runner")


class PlatformError(Exception):
    """Starting or stopping the platform failed; the message says why and what to do."""


@dataclass
class RunningPlatform:
    pid: int
    base_url: str


def read_pid_file(settings: PlatformSettings) -> RunningPlatform | None:
    """The platform running on this home, or None (a stale pid file is removed)."""
    try:
        data = orjson.loads(settings.pid_file.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    try:
        os.kill(data["pid"], 0)
    except (ProcessLookupError, KeyError, TypeError):
        settings.pid_file.unlink(missing_ok=True)
        return None
    except PermissionError:
        pass
    return RunningPlatform(data["pid"], data["base_url"])


def _check_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise PlatformError(f"Port {port} on {host} is in use; stop whatever listens there or pick another with --port") from None


#: What running the platform needs beyond a client install (the ``server`` extra).
SERVER_PACKAGES = ("mlflow", "fastapi", "uvicorn", "sqlalchemy", "alembic", "prometheus_client", "uv")


def missing_server_packages() -> list[str]:
    import importlib.util

    def missing(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ImportError:
            return True

    return [name for name in SERVER_PACKAGES if missing(name)]


def quiet_mlflow_telemetry(settings: PlatformSettings) -> None:
    """Before MLflow is imported here: this process and every child it starts (MLflow's
    server, workers, the writer, scorers) inherit the choice (``PlatformSettings.mlflow_telemetry``)."""
    if not settings.mlflow_telemetry and "DO_NOT_TRACK" not in os.environ:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _configure_logging(settings: PlatformSettings) -> None:
    from agentwharf.platform import logs

    logs.configure(settings.logs_dir / "platform.log", json_lines=settings.log_format == "json",
                   max_bytes=settings.log_max_bytes, backups=settings.log_backups, access=settings.access_log)


def serve(settings: PlatformSettings) -> None:
    """Run the platform in this process until SIGTERM or Ctrl-C.

    Raises:
        PlatformError: it already runs, or the port is taken.
        InvalidConfiguration: the database or artifact store the settings name cannot be used.
    """
    import uvicorn

    from agentwharf.platform.early_start import start_early
    from agentwharf.platform.http_protocol import protocol_class

    if (running := read_pid_file(settings)) is not None:
        raise PlatformError(f"A platform already runs on home {settings.home} (pid {running.pid}, {running.base_url})")
    _check_port_free(settings.listen_host, settings.port)
    preflight.check(settings)
    # Everything this process and its children write (database, spool, logs, artifacts) is
    # its user's alone: the home holds every request and response.
    os.umask(0o077)
    _configure_logging(settings)
    ensure_open_files(settings.max_connections)
    quiet_mlflow_telemetry(settings)
    # MLflow's server package imports starlette's deprecated WSGI middleware: a notice for
    # MLflow's developers, which would otherwise open every `agentwharf up` on the console.
    warnings.filterwarnings("ignore", message=r"starlette\.middleware\.wsgi is deprecated")
    # MLflow's server starts while this process imports the platform (early_start says why).
    environ = dict(os.environ)
    mlflow = start_early(settings, environ)
    from agentwharf.platform.app import create_app

    app = create_app(settings, environ, mlflow)
    # log_config=None: uvicorn's own dictConfig would close every handler already configured
    # (the platform's log and its access-log buffer among them).
    config = uvicorn.Config(app, host=settings.listen_host, port=settings.port, lifespan="on", log_level="warning",
                            log_config=None, access_log=False, timeout_graceful_shutdown=10,
                            http=protocol_class(settings.header_timeout, settings.max_connections),
                            timeout_keep_alive=max(1, round(settings.keep_alive_timeout)))
    server = uvicorn.Server(config)
    original_startup = server.startup

    async def startup(sockets=None):
        await original_startup(sockets=sockets)
        if server.started:
            settings.pid_file.write_bytes(orjson.dumps({"pid": os.getpid(), "base_url": settings.base_url}))
            log.info("agentwharf is up at %s (home %s)", settings.base_url, settings.home.resolve())

    server.startup = startup
    try:
        server.run()
    finally:
        with contextlib.suppress(OSError):
            if read_pid_file(settings) and read_pid_file(settings).pid == os.getpid():
                settings.pid_file.unlink()
    if not server.started:
        raise PlatformError(f"The platform failed to start; see {settings.logs_dir / 'platform.log'}")


def start_detached(settings: PlatformSettings, timeout: float = 180.0, on_wait=None) -> RunningPlatform:
    """Start the platform in the background and return once ``/healthz`` answers.

    Raises:
        PlatformError: it is already running, the port is taken, or it died while starting.
        InvalidConfiguration: the database or artifact store the settings name cannot be used.
    """
    if (running := read_pid_file(settings)) is not None:
        if running.base_url != settings.base_url:
            raise PlatformError(f"A platform already runs on home {settings.home} at {running.base_url} (pid {running.pid}); "
                                f"use that URL, or stop it first (agentwharf down --home {settings.home})")
        return running
    _check_port_free(settings.listen_host, settings.port)
    preflight.check(settings)  # a bad setting is said here, not in the child's log tail
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    out_path = settings.logs_dir / "platform.out"
    command = [sys.executable, "-m", "agentwharf.cli.main", "up", "--home", str(settings.home.resolve()),
               "--host", settings.listen_host, "--port", str(settings.port)]
    with open_log(out_path) as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise PlatformError(f"The platform exited while starting (code {process.returncode}). Log tail:\n{log_tail(out_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{settings.base_url}/healthz", timeout=1.0).status_code == 200:
                return RunningPlatform(process.pid, settings.base_url)
        if on_wait is not None:
            on_wait(time.monotonic() - started)
        time.sleep(0.25)
    process.terminate()
    raise PlatformError(f"The platform did not answer within {timeout:.0f}s. Log tail:\n{log_tail(out_path)}")


def stop(settings: PlatformSettings, timeout: float = 60.0) -> RunningPlatform | None:
    """Stop the platform running on this home. Returns what was stopped, or None."""
    running = read_pid_file(settings)
    if running is None:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(running.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.pid, signal.SIGKILL)
    settings.pid_file.unlink(missing_ok=True)
    return running


def serve_gateway(settings: PlatformSettings, index: int, control_url: str) -> None:
    """Run gateway process ``index`` (``agentwharf gateway``) in this process until SIGTERM or Ctrl-C.

    Raises:
        PlatformError: the port is taken, or it failed to start.
    """
    import uvicorn

    from agentwharf.platform.gateway_process import GatewayProcess
    from agentwharf.platform.http_protocol import protocol_class

    _check_port_free(settings.listen_host, settings.port)
    os.umask(0o077)
    from agentwharf.platform import logs

    logs.configure(settings.logs_dir / f"gateway-{index}.log", json_lines=settings.log_format == "json",
                   max_bytes=settings.log_max_bytes, backups=settings.log_backups, access=settings.access_log)
    ensure_open_files(settings.max_connections)
    quiet_mlflow_telemetry(settings)
    app = GatewayProcess(settings, index, control_url, dict(os.environ))
    config = uvicorn.Config(app, host=settings.listen_host, port=settings.port, lifespan="on", log_level="warning",
                            log_config=None, access_log=False, timeout_graceful_shutdown=10,
                            http=protocol_class(settings.header_timeout, settings.max_connections),
                            timeout_keep_alive=max(1, round(settings.keep_alive_timeout)))
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise PlatformError(f"Gateway {index} failed to start; see {settings.logs_dir / f'gateway-{index}.log'}")
