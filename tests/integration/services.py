"""Real servers the scale-out configurations run on, started for the tests (and ``make bench``):
a throwaway PostgreSQL cluster, an S3-compatible object store, and nginx in front of gateway
processes.

Both listen on a free loopback port, live in a temp dir of their own and die with the process
that started them (``PR_SET_PDEATHSIG``), so a killed test run leaves no server behind. Neither
is optional: if PostgreSQL is not installed the tests fail and say how to install it (``make
test`` installs it with apt), rather than skip.

The platform under test is only told URLs and credentials, as it would be in production; it
cannot tell that the object store is moto's server rather than MinIO or AWS S3.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentwharf.children import die_with_parent, log_tail

#: The OS user that runs the cluster when the tests run as root (PostgreSQL refuses root).
#: Debian's ``postgresql`` package creates it.
POSTGRES_OS_USER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` are: Debian keeps them off PATH, per major version.

    Raises:
        RuntimeError: PostgreSQL's server is not installed (the message says how to install it).
    """
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    found = versions[-1] if versions else shutil.which("initdb")
    if not found:
        raise RuntimeError("PostgreSQL's server is not installed (no initdb): `apt-get install postgresql` "
                           "(make test installs it)")
    return Path(found).resolve().parent


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f}s:\n{log_tail(log)}")


def _stop(process: subprocess.Popen | None, sig: int, timeout: float = 30.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PostgresCluster:
    """A PostgreSQL cluster of its own: ``initdb`` in a temp dir, ``postgres`` on a free port of
    127.0.0.1 with password (SCRAM) authentication, each test platform in a database of its own.

    Args:
        durable: keep PostgreSQL's defaults (fsync, synchronous commit). The tests turn them
            off (they kill the platform, never the cluster, so they lose nothing by it); the
            writer benchmark keeps them, to measure what production would see.
    """

    def __init__(self, durable: bool = False):
        self.durable = durable
        self.port = 0
        self.password = secrets.token_urlsafe(16)
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None
        self._databases = 0
        # As root, the cluster runs as the postgres OS user (PostgreSQL refuses to run as root).
        self._user = POSTGRES_OS_USER if os.geteuid() == 0 else None

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def _as_owner(self, *, die_with_us: bool = False) -> list[str]:
        """A command prefix that runs a child as the cluster's OS user (and, asked, ends it
        with SIGINT, PostgreSQL's fast shutdown, when this process dies).

        util-linux's ``setpriv`` execs in place, so the server stays our direct child. Python's
        own ``Popen(user=...)`` failed now and then here ("Exception occurred in preexec_fn").
        """
        prefix = ["setpriv"]
        if self._user is not None:
            prefix += [f"--reuid={self._user}", f"--regid={self._user}", "--clear-groups"]
        if die_with_us:
            prefix.append("--pdeathsig=INT")
        return [*prefix, "--"]

    def start(self, timeout: float = 60.0) -> PostgresCluster:
        bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="agentwharf-pg-"))
        ids = (pwd.getpwnam(self._user).pw_uid, pwd.getpwnam(self._user).pw_gid) if self._user else None
        if ids:
            os.chown(self.root, *ids)
        password_file = self.root / "password"
        password_file.write_text(self.password + "\n")
        if ids:
            os.chown(password_file, *ids)
        data = self.root / "data"
        initdb = subprocess.run(
            [*self._as_owner(), str(bindir / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={password_file}",
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
            capture_output=True, text=True)
        password_file.unlink()
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}\n{initdb.stderr}")
        self.port = free_port()
        options = ["-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(self.root),
                   "-c", "max_connections=200", "-c", "shared_buffers=128MB"]
        if not self.durable:
            options += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        with open(self.log_path, "ab") as log:
            if ids:
                os.chown(self.log_path, *ids)
            self.process = subprocess.Popen([*self._as_owner(die_with_us=True), str(bindir / "postgres"), "-D", str(data),
                                             *options], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        _wait_for_port(self.port, self.process, timeout, "PostgreSQL", self.log_path)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:  # "the database system is starting up"
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, database: str) -> str:
        """``postgresql://`` URL of ``database``, as a user sets ``AGENTWHARF_DATABASE_URL``."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "agentwharf") -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"{prefix}_{self._databases}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        # SIGINT is PostgreSQL's fast shutdown: clients are disconnected, nothing is kept anyway.
        _stop(self.process, signal.SIGINT)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


class S3Server:
    """An S3-compatible object store on a free loopback port: moto's server, in a process of
    its own. The platform reaches it by endpoint URL and access keys only, as it would MinIO."""

    access_key_id = "agentwharf-tests"
    secret_access_key = "agentwharf-tests-secret-" + secrets.token_hex(8)
    region = "us-east-1"

    def __init__(self):
        self.port = 0
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> S3Server:
        self.root = Path(tempfile.mkdtemp(prefix="agentwharf-s3-"))
        self.port = free_port()
        log_path = self.root / "s3.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                            stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        _wait_for_port(self.port, self.process, timeout, "the S3 server", log_path)
        return self

    def client(self):
        """A boto3 S3 client of the store, for the tests' own look at what is stored."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        paginator = self.client().get_paginator("list_objects_v2")
        return [item["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for item in page.get("Contents", [])]

    def platform_env(self, bucket: str, prefix: str) -> dict[str, str]:
        """The settings that point a platform's artifacts at ``s3://bucket/prefix`` here."""
        return {"AGENTWHARF_ARTIFACTS_URI": f"s3://{bucket}/{prefix}",
                "AGENTWHARF_S3_ENDPOINT_URL": self.endpoint_url,
                "AGENTWHARF_S3_ACCESS_KEY_ID": self.access_key_id,
                "AGENTWHARF_S3_SECRET_ACCESS_KEY": self.secret_access_key,
                "AGENTWHARF_S3_REGION": self.region}

    def stop(self) -> None:
        _stop(self.process, signal.SIGTERM)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def nginx_binary() -> str:
    """Debian's nginx.

    Raises:
        RuntimeError: nginx is not installed (the message says how; make test installs it).
    """
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if not found:
        raise RuntimeError("nginx is not installed: `apt-get install nginx-light` (make test installs it)")
    return found


_NGINX_CONF = """
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream gateways {{
{servers}
        keepalive 32;
    }}
    upstream control {{ server 127.0.0.1:{control_port}; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_read_timeout 300s;
        proxy_buffering off;
        # A gateway that refuses connections (killed) is skipped: a request not yet sent to it
        # goes to the next one, even a POST.
        proxy_next_upstream error timeout;
        location /serving-endpoints/ {{ proxy_pass http://gateways; }}
        # A request lost with a gateway is answered in JSON, as the platform answers errors.
        error_page 502 504 = @gateway_lost;
        location @gateway_lost {{
            default_type application/json;
            return 502 '{{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "The gateway serving this request went away; retry"}}';
        }}
        location / {{ proxy_pass http://control; }}
    }}
}}
"""


class Nginx:
    """nginx on a free loopback port: ``/serving-endpoints/`` spread over gateway processes,
    everything else to the control process (README, "Running on more than one machine")."""

    def __init__(self, control_port: int, gateway_ports: list[int]):
        self.control_port = control_port
        self.gateway_ports = gateway_ports
        self.port = 0
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Nginx:
        self.root = Path(tempfile.mkdtemp(prefix="agentwharf-nginx-"))
        self.port = free_port()
        servers = "\n".join(f"        server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;" for port in self.gateway_ports)
        conf = self.root / "nginx.conf"
        # Run as root (a test container), nginx's workers would become ``nobody``, who cannot use
        # this temp dir; as anyone else the directive is ignored.
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(_NGINX_CONF.format(user=user, root=self.root, servers=servers, control_port=self.control_port, port=self.port))
        log_path = self.root / "error.log"
        with open(self.root / "nginx.out", "ab") as out:
            self.process = subprocess.Popen([nginx_binary(), "-c", str(conf), "-p", str(self.root), "-g", "daemon off;"],
                                            stdout=out, stderr=out, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        _wait_for_port(self.port, self.process, timeout, "nginx", log_path)
        return self

    def stop(self) -> None:
        _stop(self.process, signal.SIGQUIT)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
