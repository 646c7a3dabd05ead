"""The platform's processes keep MLflow's usage telemetry off unless the settings ask for it."""

import os
import subprocess
import sys

import pytest

from agentwharf.platform.runner import quiet_mlflow_telemetry
from agentwharf.settings import PlatformSettings

#: The variables by which MLflow 3.17 takes a process for CI or a test run, and then turns
#: telemetry off by itself (``mlflow.telemetry.utils._is_ci_env_or_testing``).
_CI_MARKERS = ("PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "CI", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD",
               "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
               "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID")


def _mlflow_says_disabled(env: dict[str, str]) -> bool:
    """What MLflow itself decides in a process started with ``env`` (as a worker would be), on
    a user's machine rather than in CI."""
    code = "from mlflow.telemetry.utils import is_telemetry_disabled; print(is_telemetry_disabled())"
    env = {k: v for k, v in env.items() if k not in _CI_MARKERS}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


@pytest.fixture
def outside_ci(monkeypatch):
    """No choice of the user's in this process's environment (the platform's starts from it)."""
    for name in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)


def test_children_of_a_platform_find_mlflow_telemetry_off(tmp_path, outside_ci):
    assert not _mlflow_says_disabled(dict(os.environ))  # MLflow's own default here: on
    quiet_mlflow_telemetry(PlatformSettings(home=tmp_path))
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert _mlflow_says_disabled(dict(os.environ))


def test_the_setting_leaves_mlflows_default(tmp_path, outside_ci):
    quiet_mlflow_telemetry(PlatformSettings(home=tmp_path, mlflow_telemetry=True))
    assert "MLFLOW_DISABLE_TELEMETRY" not in os.environ


@pytest.mark.parametrize("name, value", [("MLFLOW_DISABLE_TELEMETRY", "false"), ("DO_NOT_TRACK", "false")])
def test_a_users_own_choice_is_kept(tmp_path, outside_ci, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    quiet_mlflow_telemetry(PlatformSettings(home=tmp_path))
    assert os.environ[name] == value
    assert os.environ.get("MLFLOW_DISABLE_TELEMETRY", "false") == "false"
