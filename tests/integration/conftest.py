"""Session fixtures: one real platform (MLflow server, control plane, gateway, workers) on a
free port, and the test agents logged to it from code and registered."""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path

import httpx
import mlflow
import pytest

from tests.integration.platform_process import PlatformProcess, client_state, wait_until
from tests.integration.services import PostgresCluster, S3Server

AGENTS = Path(__file__).parent / "agents"
_counter = itertools.count(1)

# Short timings so the scale-to-zero and restart tests run in seconds.
# A client that meets a stopped server gives up within seconds instead of MLflow's default of
# minutes of retries, so one broken fixture fails its tests instead of stalling the session.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")

PLATFORM_ENV = {
    "AGENTWHARF_SCALE_TO_ZERO_IDLE_SECONDS": "3",
    "AGENTWHARF_RESTART_BACKOFF_MIN": "0.2",
    "AGENTWHARF_RESTART_BACKOFF_MAX": "2",
    "AGENTWHARF_OBO_TOKEN_LIFETIME_SECONDS": "3",
    # LLM endpoints: a provider that hangs is answered 504 within seconds; judges without a
    # model use the platform's LLM endpoint named "judge" (test_llm_endpoints makes it).
    "AGENTWHARF_LLM_REQUEST_TIMEOUT": "5",
    "AGENTWHARF_JUDGE_ENDPOINT": "judge",
    # Rollouts judge their gates twice a second, so a canary is decided in seconds.
    "AGENTWHARF_ROLLOUT_INTERVAL_SECONDS": "0.5",
    # Online scoring: a custom scorer that spins or sleeps is stopped within seconds.
    "AGENTWHARF_SCORER_TIMEOUT_SECONDS": "6",
    "AGENTWHARF_SCORER_CPU_SECONDS": "2",
    "AGENTWHARF_SCORER_MEMORY_BYTES": str(256 << 20),
    # Monitoring metrics and alert rules are evaluated every second.
    "AGENTWHARF_MONITOR_INTERVAL_SECONDS": "1",
    # As in many containers (and on the machines CI runs on): the platform must keep its model
    # environments' bytecode anyway, or every worker start compiles MLflow again.
    "PYTHONDONTWRITEBYTECODE": "1",
}


@pytest.fixture(scope="session", autouse=True)
def _shared_model_environments(tmp_path_factory):
    """Every platform the tests start builds model environments into one folder, as several
    homes on one machine may (AGENTWHARF_ENVIRONMENTS_DIR): each distinct set of requirements
    is built once per session, not once per platform. Parallel test processes (pytest-xdist)
    share it too: their temp folders are siblings, and the builder locks each environment."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    shared = root / "model-environments"
    shared.mkdir(exist_ok=True)
    os.environ["AGENTWHARF_ENVIRONMENTS_DIR"] = str(shared)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster of the session's own (installed by ``make test`` if missing; a
    missing one fails the tests that need it, never skips them)."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def s3():
    """An S3-compatible object store of the session's own."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def platform(tmp_path_factory):
    proc = PlatformProcess(tmp_path_factory.mktemp("platform") / "home", env=PLATFORM_ENV).start()
    # Clients in this test process (mlflow, agentwharf.agents) find the platform here.
    os.environ.update(proc.client_env())
    mlflow.set_tracking_uri(proc.base_url)
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _keep_mlflow_client_state():
    """Tests that start a platform of their own point MLflow's client at it; put the client
    back afterwards so later tests do not talk to a stopped server."""
    with client_state():
        yield


@pytest.fixture(scope="session")
def http(platform):
    with httpx.Client(base_url=platform.base_url, timeout=60, headers=platform.headers) as client:
        yield client


def _log(path: Path) -> str:
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("/tests/agents")
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(name="agent", python_model=str(path), pip_requirements=["mlflow"]).model_uri


@pytest.fixture(scope="session")
def logged(platform) -> dict[str, str]:
    """Model URIs of the test agents, logged once."""
    return {name: _log(AGENTS / f"{name}_agent.py") for name in ("info", "broken")}


@pytest.fixture
def register(logged):
    """Register a test agent under a fresh ``main.tests.<name>`` with ``versions`` versions."""

    def _register(agent: str = "info", versions: int = 1) -> str:
        name = f"main.tests.{agent}{next(_counter)}"
        for _ in range(versions):
            mlflow.register_model(logged[agent], name)
        return name

    return _register


@contextlib.contextmanager
def deployed_info_agent(logged: dict[str, str], model: str):
    """The info test agent registered as ``model`` v1 and deployed; undeployed afterwards."""
    from agentwharf import agents

    mlflow.register_model(logged["info"], model)
    deployment = agents.deploy(model, "1")
    try:
        yield deployment
    finally:
        agents.delete_deployment(model)


def ask(http: httpx.Client, path: str, text: str = "hi", **custom) -> httpx.Response:
    body = {"input": [{"role": "user", "content": text}]}
    if custom:
        body["custom_inputs"] = custom
    return http.post(path, json=body)


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of a server-sent events answer, in order."""
    lines = [line for line in response.text.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[len("data: "):] for line in lines]


def rows_for(http: httpx.Client, endpoint: str, request_ids: set[str], **params) -> dict[str, dict]:
    """The inference-table rows of ``request_ids`` (by the platform's request id), once written."""
    def fetch():
        rows = []
        page = {"max_results": 1000, **params}
        while True:
            answer = http.get(f"/api/2.0/serving-endpoints/{endpoint}/inference-table", params=page).json()
            rows += answer["rows"]
            if "next_page_token" not in answer:
                break
            page["page_token"] = answer["next_page_token"]
        found = {r["request_id"]: r for r in rows if r["request_id"] in request_ids}
        return found if len(found) == len(request_ids) else None

    return wait_until(fetch, timeout=30, message="inference rows to be written")


@contextlib.contextmanager
def trusted_custom_scorers():
    """This process as a client that may rebuild registered custom ``@scorer`` code.

    MLflow's client rebuilds such a scorer from its source (``start``, ``update``,
    ``get_scorer``, ``list_scorers``) only when told the code is trusted
    (``MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS``, README), and never in what it takes for its tracking
    server: a process that has imported ``mlflow.server`` while uvicorn is loaded. Some tests
    import ``mlflow.server`` to read MLflow's own routes, so in a whole-suite run this process
    would look like a server from then on; it is not one."""
    import sys

    saved = os.environ.get("MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS")
    os.environ["MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS"] = "true"
    server = sys.modules.get("mlflow.server")
    was_server = getattr(server, "is_running_as_server", None)
    if server is not None:
        server.is_running_as_server = False
    try:
        yield
    finally:
        if server is not None:
            server.is_running_as_server = was_server
        if saved is None:
            os.environ.pop("MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS", None)
        else:
            os.environ["MLFLOW_SERVER_ENABLE_CUSTOM_SCORERS"] = saved


@pytest.fixture
def custom_scorer_client():
    """A test that registers or reads custom ``@scorer`` code as a client (``trusted_custom_scorers``)."""
    with trusted_custom_scorers():
        yield


@contextlib.contextmanager
def own_platform_with_info_agent(home: Path, experiment: str, env: dict[str, str]):
    """A platform of the test's own (``env`` its settings), this process's clients pointed at it
    and put back after (``client_state``), and the info agent logged in ``experiment``: yields
    (the platform, the logged model's URI). The platform is stopped at the end, whatever the
    test did with it in between (restarts included)."""
    own = PlatformProcess(home, env=env)
    with client_state():
        try:
            own.start()
            os.environ.update(own.client_env())
            mlflow.set_tracking_uri(own.base_url)
            mlflow.set_experiment(experiment)
            with mlflow.start_run():
                uri = mlflow.pyfunc.log_model(name="agent", python_model=str(AGENTS / "info_agent.py"),
                                              pip_requirements=["mlflow"]).model_uri
            yield own, uri
        finally:
            own.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries its platforms' warnings and errors: CI keeps only the
    failure output, and a reset connection or a 5xx says little without the platform's side."""
    report = yield
    if report.failed and call.when == "call":
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, PlatformProcess):
                report.sections.append((f"platform {name}: its warnings and errors, last 40", _platform_trouble(value)))
    return report


def _platform_trouble(platform: PlatformProcess, lines: int = 40) -> str:
    logs = platform.home / "logs"
    found: list[str] = []
    for path in sorted([*logs.glob("*.log"), *platform.home.parent.glob(f"{platform.home.name}-platform.out")]):
        with contextlib.suppress(OSError):
            found += [f"{path.name}: {line}" for line in path.read_text(errors="replace").splitlines()
                      if " WARNING " in line or " ERROR " in line or "Traceback" in line]
    return "\n".join(found[-lines:]) or "(none)"
