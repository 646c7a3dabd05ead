"""A client-only install (``pip install agentwharf``): deploying, querying and the admin
commands work without the server's packages, and ``agentwharf up`` says what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SERVER_ONLY = ("mlflow", "fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pyarrow", "prometheus_client", "uv")

#: Runs first in the child: the server's packages cannot be imported, as in a client install.
BLOCKER = textwrap.dedent(f"""
    import sys
    class ClientInstall:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {SERVER_ONLY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}} (a client-only install)")
    sys.meta_path.insert(0, ClientInstall())
""")


def client_python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_the_client_works_without_the_server_packages(platform, register):
    model = register("info")
    done = client_python("""
        from agentwharf import agents
        deployment = agents.deploy(sys.argv[1], "1")
        print(deployment.endpoint_name)
        agents.delete_deployment(sys.argv[1])
    """, model)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"agents_{model.replace('.', '-')}"


def test_the_cli_without_the_server_packages(platform):
    cli = "from agentwharf.cli.main import main; sys.argv[0] = 'agentwharf'; main()"
    listed = client_python(cli, "endpoints", "list", "--json")
    assert listed.returncode == 0 and listed.stdout.lstrip().startswith("["), listed.stderr
    up = client_python(cli, "up", "--home", "/tmp/never-started")
    assert up.returncode == 1
    assert "pip install 'agentwharf[server]'" in up.stderr and "Traceback" not in up.stderr
