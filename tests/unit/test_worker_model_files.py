"""Where a worker fetches its model's files, and that they never outlive it: a model with big
artifacts would otherwise leave a copy in the temp folder at every start, restart and scale
from zero. (Removal when a served version stops, and after a kill -9 of the platform, is
tested on real platforms in test_workers and test_faults.)"""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from pathlib import Path

from agentwharf.serving.supervisor import Supervisor, WorkerLauncher
from agentwharf.serving.worker import _fetch_folder


def test_the_supervisors_folder_is_made_private_to_the_worker(tmp_path):
    folder = tmp_path / "run" / "w-0123456789ab-0-cafe.model"
    assert _fetch_folder(str(folder)) == str(folder)
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o700
    (folder / "MLmodel").write_text("a copy fetched before a crash")
    assert _fetch_folder(str(folder)) == str(folder)  # the restarted worker fetches into it again


def test_without_a_folder_the_temporary_copy_is_removed_when_the_process_exits(tmp_path):
    code = ("from agentwharf.serving.worker import _fetch_folder; import pathlib, sys; "
            "folder = pathlib.Path(_fetch_folder(None)); (folder / 'MLmodel').write_text('x'); print(folder)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    folder = Path(run.stdout.strip())
    assert folder.parent == tmp_path and folder.name.startswith("agentwharf-model-")
    assert not folder.exists()


def test_a_killed_platforms_worker_files_are_removed_at_the_next_start_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = run / "w-0123456789ab-0-cafe.model"
    (model / "artifacts").mkdir(parents=True)
    (model / "artifacts" / "index.bin").write_bytes(b"\0" * 1024)
    (run / "w-0123456789ab-0-cafe.sock").write_text("")
    (run / "w-0123456789ab-1-cafe.addr").write_text("127.0.0.1:9")
    (run / "gateway.sock").write_text("")
    supervisor = Supervisor(WorkerLauncher(4, {}), run, tmp_path / "logs", start_timeout=5.0, backoff_min=0.1,
                            backoff_max=1.0, idle_seconds=600.0, cold_start_timeout=5.0)
    supervisor._remove_stale_worker_files()
    assert sorted(p.name for p in run.iterdir()) == ["gateway.sock"]


def _version(model_uri: str, model_path: Path, key: str = "bot/bot_1"):
    from agentwharf.serving.environments import Runtime
    from agentwharf.serving.supervisor import ServedVersion, WorkerSpec

    version = ServedVersion(spec=WorkerSpec(key=key, model_uri=model_uri, replicas=1))
    version.runtime = Runtime(python=sys.executable, model_path=str(model_path), environment="env-1")
    return version


def _fetched(models: Path, name: str) -> Path:
    folder = models / name
    (folder / "artifacts").mkdir(parents=True)
    (folder / "MLmodel").write_text("flavors: {}")
    return folder


def _with_environments(tmp_path):
    from agentwharf.serving.environments import Environments

    environments = Environments(tmp_path / "envs", tmp_path / "models", tmp_path / "runtime", "uv", {})
    (tmp_path / "run").mkdir(exist_ok=True)
    supervisor = Supervisor(WorkerLauncher(4, {}), tmp_path / "run", tmp_path / "logs", environments=environments,
                            start_timeout=5.0, backoff_min=0.1, backoff_max=1.0, idle_seconds=600.0,
                            cold_start_timeout=5.0)
    return supervisor, tmp_path / "models"


def test_a_version_stopped_for_good_removes_the_files_its_build_fetched(tmp_path):
    supervisor, models = _with_environments(tmp_path)
    fetched = _fetched(models, "a1b2c3")
    other = _fetched(models, "d4e5f6")
    asyncio.run(supervisor._stop_version(_version("models:/main.default.bot/1", fetched)))
    assert not fetched.exists() and other.exists()


def test_files_another_served_version_may_start_from_are_kept(tmp_path):
    supervisor, models = _with_environments(tmp_path)
    fetched = _fetched(models, "a1b2c3")
    # The same model on a second endpoint (or the version replacing this one) is still served.
    supervisor.versions["other/other_1"] = _version("models:/main.default.bot/1", fetched, key="other/other_1")
    asyncio.run(supervisor._stop_version(_version("models:/main.default.bot/1", fetched)))
    assert fetched.exists()
    # Scaled to zero, a version comes back from the same files.
    supervisor.versions.clear()
    asyncio.run(supervisor._stop_version(_version("models:/main.default.bot/1", fetched), "SCALED_TO_ZERO"))
    assert fetched.exists()


def test_a_start_removes_what_a_killed_platform_fetched_and_nothing_outside(tmp_path):
    supervisor, models = _with_environments(tmp_path)
    _fetched(models, "a1b2c3")
    (models / ".fetch-x1y2").mkdir()  # a fetch the kill interrupted
    outside = _fetched(tmp_path / "elsewhere", "a1b2c3")
    supervisor.environments.remove_model_files(str(outside))
    assert outside.exists()

    async def start_and_close():
        supervisor.start_background()
        await supervisor.close()

    asyncio.run(start_and_close())
    assert list(models.iterdir()) == [] and outside.exists()
