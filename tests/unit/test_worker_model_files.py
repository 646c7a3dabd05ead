"""Where a worker fetches its model's files, and that they never outlive it: a model with big
artifacts would otherwise leave a copy in the temp folder at every start, restart and scale
from zero. (Removal when a served version stops, and after a kill -9 of the platform, is
tested on real platforms in test_workers and test_faults.)"""

from __future__ import annotations

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
