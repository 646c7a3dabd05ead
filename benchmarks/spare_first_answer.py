"""Deploy-to-first-answer of the EchoAgent in a warm environment, with a warm spare worker and
without (``AGENTWHARF_WORKER_SPARES`` 1 and 0), same machine, same run (issue 17 item 4).

For each setting: a fresh platform home; version 1 is deployed (it builds, or reuses from uv's
cache, the model's environment, and starts its runtime's first worker); after a quiet spell
(time for the spare to import MLflow), versions 2 and 3, same requirements, are deployed one
after the other with the same spell between them, each timed from the deploy call to its first
200. Run from ``benchmarks/``: ``python spare_first_answer.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from platform_costs import PY, _build_seconds, _first_answer
from procs import free_port
from systems import AW_MODEL, _client_env, child_env, mlflow_setup, started

#: Between deploys: the spare's refill delay (3 s) plus its imports, with room to spare.
SETTLE_SECONDS = 20.0


def measure(tmp: Path, spares: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    home = tmp / "home"
    command = [PY, "-m", "agentwharf.cli.main", "up", "--home", str(home), "--port", str(port)]
    with started(f"agentwharf-spares-{spares}", command, tmp, child_env(AGENTWHARF_WORKER_SPARES=str(spares))) as service:
        service.wait_http(f"{base}/healthz", timeout=180)
        token = (home / "admin.token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        versions = [mlflow_setup(tmp, base, "/benchmarks/spares", "--register", AW_MODEL, token=token)["version"]
                    for _ in range(3)]
        endpoint = "agents_" + AW_MODEL.replace(".", "-")
        seconds, reused = [], []
        with _client_env(base, token):
            for index, version in enumerate(versions):
                if index:
                    time.sleep(SETTLE_SECONDS)
                entity = f"{AW_MODEL.replace('.', '-')}_{version}"
                seconds.append(round(_first_answer(base, headers, endpoint, entity, version), 2))
                reused.append(_build_seconds(home / "logs" / "workers" / endpoint / f"{entity}-build.log")[1])
    return {"spares": spares, "deploy_to_first_answer_s": seconds, "environment_reused": reused}


def main() -> int:
    results = []
    for spares in (1, 0):
        with tempfile.TemporaryDirectory(prefix=f"aw-spares-{spares}-") as scratch:
            results.append(measure(Path(scratch), spares))
            print(json.dumps(results[-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
