"""A serving process raises its own limit on open files to hold the connections it accepts."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import logging, resource, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from agentwharf.platform.open_files import ensure_open_files
soft, hard = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(ensure_open_files(4096), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _run(soft: int, hard: int) -> tuple[list[int], str]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(soft), str(hard)], capture_output=True, text=True, check=True)
    return [int(part) for part in done.stdout.split()], done.stderr


def test_a_soft_limit_below_the_connections_is_raised_up_to_what_they_need():
    import resource

    wanted = 4096 + 1024
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = wanted + 10 if hard == resource.RLIM_INFINITY else min(hard, wanted + 10)
    numbers, said = _run(1024, hard)
    assert numbers == [min(wanted, hard)] * 2
    assert (said == "") == (hard >= wanted), said


def test_a_hard_limit_too_low_is_used_whole_and_said():
    numbers, said = _run(256, 2000)
    assert numbers == [2000, 2000]
    assert "may open 2000 files" in said and "AGENTWHARF_MAX_CONNECTIONS" in said and "ulimit -Hn" in said


def test_a_soft_limit_already_high_enough_is_left_alone():
    assert _run(6000, 7000) == ([6000, 6000], "")
