"""The four systems under test. Each is a context manager: it starts the system on a free
loopback port in a temp dir, yields a ``Running`` (the URL to load, how to count its traces,
extra measurements), and stops everything it started on exit, whatever happened."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from procs import Service, cmdline, descendants, free_port, rss_mib

HERE = Path(__file__).resolve().parent
PY = sys.executable
BODY = {"input": [{"role": "user", "content": "hello"}]}
EXPECTED_TEXT = "Echo: hello"

AW_MODEL = "main.default.echo"
AW_ENDPOINT = "agents_main-default-echo"


@dataclass
class Running:
    url: str
    count_traces: Callable[[], int] | None = None
    after_load: Callable[[], dict] | None = None
    notes: dict = field(default_factory=dict)
    #: Sent with every request (agentwharf's bearer token).
    headers: dict = field(default_factory=dict)
    #: The system's own process (its children are its workers, writer, ...).
    pid: int | None = None


def child_env(**extra: str) -> dict[str, str]:
    """This environment without settings that would point a child at some other store/platform."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AGENTWHARF_"))}
    # As if the venv were activated: `mlflow models serve` execs `uvicorn` from PATH.
    env["PATH"] = os.pathsep.join([str(Path(PY).parent), env.get("PATH", os.defpath)])
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def mlflow_setup(tmp: Path, tracking_uri: str, experiment: str, *flags: str, token: str | None = None) -> dict:
    """Run ``mlflow_setup.py`` (MLflow client work) in a subprocess; its JSON answer."""
    command = [PY, str(HERE / "mlflow_setup.py"), "--tracking-uri", tracking_uri, "--experiment", experiment, *flags]
    env = child_env(**({"MLFLOW_TRACKING_TOKEN": token} if token else {}))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def count_traces(db: Path, experiment_id: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        return conn.execute("SELECT COUNT(*) FROM trace_info WHERE experiment_id = ?", (int(experiment_id),)).fetchone()[0]


def query(url: str, timeout: float = 60.0, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url, json=BODY, timeout=timeout, headers=headers)


def verify(name: str, url: str, headers: dict | None = None) -> None:
    """One real request must answer 200 with the echo text: a benchmark of errors is worthless."""
    response = query(url, headers=headers)
    if response.status_code != 200 or EXPECTED_TEXT not in response.text:
        raise RuntimeError(f"{name}: POST {url} answered {response.status_code}, expected 200 with {EXPECTED_TEXT!r}:\n{response.text[:1000]}")


@contextlib.contextmanager
def started(name: str, command: list[str], tmp: Path, env: dict[str, str]) -> Iterator[Service]:
    service = Service(name, command, tmp / f"{name}.log", env, cwd=tmp)
    try:
        yield service
    finally:
        service.stop()


def _uvicorn_flags() -> list[str]:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return ["--loop", loop, "--http", http]


@contextlib.contextmanager
def bare_echo(tmp: Path) -> Iterator[Running]:
    port = free_port()
    command = [PY, "-m", "uvicorn", "echo_asgi:app", "--app-dir", str(HERE), "--host", "127.0.0.1",
               "--port", str(port), "--no-access-log", "--workers", "1", *_uvicorn_flags()]
    with started("bare-echo", command, tmp, child_env()) as service:
        service.wait_http(f"http://127.0.0.1:{port}/", timeout=60)
        yield Running(url=f"http://127.0.0.1:{port}/invocations", pid=service.pid)


@contextlib.contextmanager
def agentserver(tmp: Path, agent_module: str = "agentserver_agent") -> Iterator[Running]:
    """MLflow's AgentServer with the ``@invoke`` / ``@stream`` functions of ``agent_module``."""
    db = tmp / "mlflow.db"
    tracking_uri = f"sqlite:///{db}"
    experiment_id = mlflow_setup(tmp, tracking_uri, "agentserver-echo", "--artifact-location", (tmp / "artifacts").as_uri())["experiment_id"]
    port = free_port()
    env = child_env(MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_EXPERIMENT_ID=str(experiment_id),
                    BENCHMARK_AGENT_MODULE=agent_module)
    with started("agentserver", [PY, str(HERE / "agentserver_app.py"), "--port", str(port)], tmp, env) as service:
        service.wait_http(f"http://127.0.0.1:{port}/health", timeout=120)
        yield Running(url=f"http://127.0.0.1:{port}/invocations", count_traces=lambda: count_traces(db, experiment_id),
                      pid=service.pid)


@contextlib.contextmanager
def mlflow_models_serve(tmp: Path) -> Iterator[Running]:
    logged = mlflow_setup(tmp, f"sqlite:///{tmp / 'mlflow.db'}", "models-serve-echo", "--artifact-location", (tmp / "artifacts").as_uri(), "--log-echo")
    model_path = unquote(urlparse(logged["artifact_path"]).path)
    if not (Path(model_path) / "MLmodel").is_file():
        raise RuntimeError(f"mlflow-models-serve: no logged model at {model_path}")
    port = free_port()
    command = [PY, "-m", "mlflow", "models", "serve", "-m", model_path, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]
    # The scoring server traces every predict into the tracking store (by default ./mlflow.db,
    # experiment 0). Point it at the temp store and count what it writes there.
    db = tmp / "mlflow.db"
    with started("mlflow-models-serve", command, tmp, child_env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")) as service:
        service.wait_http(f"http://127.0.0.1:{port}/ping", timeout=180)
        yield Running(url=f"http://127.0.0.1:{port}/invocations", count_traces=lambda: count_traces(db, "0"),
                      pid=service.pid)


@contextlib.contextmanager
def _client_env(base: str, token: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in ("AGENTWHARF_HOST", "MLFLOW_TRACKING_URI", "AGENTWHARF_TOKEN")}
    os.environ.update(AGENTWHARF_HOST=base, MLFLOW_TRACKING_URI=base, AGENTWHARF_TOKEN=token)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_BARE_LOAD = """
import json, sys
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(json.loads(sys.argv[2]))
print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS:")][0])
"""


def bare_load_model_rss(platform_pid: int, home: Path, tmp: Path) -> dict | None:
    """Resident memory of a bare process that only ``mlflow.pyfunc.load_model``s the model the
    worker serves (the worker's own copy, with the worker's own interpreter) and predicts once:
    what serving the model costs at the least, against which a worker's memory is judged."""
    workers = [pid for pid in descendants(platform_pid) if "agentwharf.serving.worker" in cmdline(pid) and "--spare" not in cmdline(pid)]
    models = sorted((home / "models").glob("*/MLmodel"))
    if not workers or not models:
        return None
    python = cmdline(workers[0]).split(" ")[0]
    done = subprocess.run([python, "-c", _BARE_LOAD, str(models[0].parent), json.dumps(BODY)], capture_output=True,
                          text=True, timeout=300, cwd=tmp, env=child_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'bare-load.db'}"))
    if done.returncode != 0:
        raise RuntimeError(f"bare load_model process failed:\n{done.stderr[-2000:]}")
    return {"rss_mib": int(done.stdout.strip().splitlines()[-1]) / 1024, "worker_pid": workers[0]}


def _memory(platform_pid: int) -> dict:
    workers = [pid for pid in descendants(platform_pid) if "agentwharf.serving.worker" in cmdline(pid)]
    # A process started as a spare keeps ``--spare`` in its command line once it serves too; in
    # this benchmark the served version's worker is started fresh, so those are spares waiting.
    spares = [pid for pid in workers if "--spare" in cmdline(pid)]
    return {
        "platform_rss_mib": rss_mib(platform_pid),
        "worker_rss_mib": {str(pid): rss_mib(pid) for pid in sorted(set(workers) - set(spares))},
        "spare_rss_mib": {str(pid): rss_mib(pid) for pid in sorted(spares)},
    }


#: One folder of model environments for every agentwharf system of a run (``run.py`` sets it),
#: as homes on one machine may share one (AGENTWHARF_ENVIRONMENTS_DIR): the EchoAgent's
#: environment is built once per run rather than once per system (~20-25 s each, five systems
#: and the waiting agent). What a cold build costs is the costs section's row, timed in a home
#: of its own; no serving row depends on how its environment was built.
shared_environments: Path | None = None


def _environments_env() -> dict[str, str]:
    return {"AGENTWHARF_ENVIRONMENTS_DIR": str(shared_environments)} if shared_environments else {}


@contextlib.contextmanager
def agentwharf(tmp: Path, with_auth: bool = True, workload_size: str = "Small", agent: Path | None = None,
               model: str = AW_MODEL) -> Iterator[Running]:
    """The platform as users run it (every request carries a token it checks), or, for the
    comparison that prices that check, with AGENTWHARF_BENCHMARK_WITHOUT_AUTH; the EchoAgent
    (or the models-from-code file ``agent``, registered as ``model``) deployed with
    ``workload_size`` (Small: one worker process, Medium: two)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = tmp / "home"
    name = ("agentwharf" if with_auth else "agentwharf-no-auth") + ("" if workload_size == "Small" else f"-{workload_size.lower()}")
    command = [PY, "-m", "agentwharf.cli.main", "up", "--home", str(home), "--port", str(port)]
    env = child_env(**_environments_env(), **({} if with_auth else {"AGENTWHARF_BENCHMARK_WITHOUT_AUTH": "1"}))
    with started(name, command, tmp, env) as service:
        service.wait_http(f"{base}/healthz", timeout=180)
        token = (home / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"} if with_auth else {}
        flags = ["--agent", str(agent)] if agent else []
        version = mlflow_setup(tmp, base, "/benchmarks/echo", "--register", model, *flags, token=token)["version"]
        endpoint_name = "agents_" + model.replace(".", "-")
        url = f"{base}/serving-endpoints/{endpoint_name}/invocations"
        with _client_env(base, token):
            from agentwharf import agents

            started_at = time.monotonic()
            agents.deploy(model, version, workload_size=workload_size)
            deadline = started_at + 300
            while query(url, headers=headers).status_code != 200:
                if time.monotonic() > deadline:
                    raise service.fail(f"{url} never answered 200 after deploy")
                time.sleep(0.05)
            first_answer_s = time.monotonic() - started_at
        endpoint = httpx.get(f"{base}/api/2.0/serving-endpoints/{endpoint_name}", timeout=30,
                             headers={"Authorization": f"Bearer {token}"}).json()
        experiment_id = endpoint["experiment_id"]
        yield Running(
            url=url,
            count_traces=lambda: count_traces(home / "agentwharf.db", experiment_id),
            after_load=lambda: _memory(service.pid),
            notes={"deploy_to_first_answer_s": first_answer_s, "experiment_id": experiment_id, "before_load": _memory(service.pid),
                   "bare_load_model": bare_load_model_rss(service.pid, home, tmp)},
            headers=headers,
            pid=service.pid,
        )


@contextlib.contextmanager
def agentwharf_gateways(tmp: Path, count: int) -> Iterator[Running]:
    """The platform with ``count`` gateway processes (``agentwharf gateway``) behind nginx, as
    README's "Running on more than one machine" sets it up: the load goes to nginx, which spreads
    it over the gateways (the platform's own gateway takes none of it)."""
    sys.path.insert(0, str(HERE.parent))
    from tests.integration.services import Nginx

    with agentwharf(tmp) as running, contextlib.ExitStack() as stack:
        control = urlparse(running.url)
        ports = []
        for index in range(1, count + 1):
            port = free_port()
            command = [PY, "-m", "agentwharf.cli.main", "gateway", "--home", str(tmp / "home"), "--port", str(port),
                       "--index", str(index), "--control", f"http://127.0.0.1:{control.port}"]
            service = stack.enter_context(started(f"gateway-{index}", command, tmp, child_env()))
            service.wait_http(f"http://127.0.0.1:{port}/healthz", timeout=120)
            ports.append(port)
        nginx = Nginx(control.port, ports).start()
        stack.callback(nginx.stop)
        url = f"{nginx.base_url}{control.path}"
        verify(f"agentwharf-{count}-gateways", url, running.headers)
        yield Running(url=url, count_traces=running.count_traces, after_load=running.after_load, notes=running.notes,
                      headers=running.headers, pid=running.pid)


SYSTEMS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Running]]] = {
    "bare-echo": bare_echo,
    "agentserver": agentserver,
    "mlflow-models-serve": mlflow_models_serve,
    "agentwharf": agentwharf,
    "agentwharf-no-auth": lambda tmp: agentwharf(tmp, with_auth=False),
    # Two worker processes (replicas of the model) behind the one gateway: what a second
    # replica buys on this machine, against the one-worker row of the same run.
    "agentwharf-2-workers": lambda tmp: agentwharf(tmp, workload_size="Medium"),
    # Gateway processes behind nginx: one (what nginx and a separate gateway cost) against two
    # (what a second gateway buys on this machine), in the same run.
    "agentwharf-1-gateway": lambda tmp: agentwharf_gateways(tmp, 1),
    "agentwharf-2-gateways": lambda tmp: agentwharf_gateways(tmp, 2),
}
