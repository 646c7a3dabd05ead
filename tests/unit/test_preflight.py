"""agentwharf.platform.preflight: what `up` checks before it starts (the checks that need a real
PostgreSQL or S3 server are in tests/integration/scaleout/test_configuration.py)."""

import pytest

from agentwharf.errors import InvalidConfiguration
from agentwharf.platform import preflight
from agentwharf.settings import PlatformSettings


def test_the_embedded_default_needs_no_check(tmp_path):
    preflight.check(PlatformSettings(home=tmp_path / "new-home"))  # nothing exists yet, nothing to reach


def test_a_sqlite_file_in_a_folder_that_does_not_exist_is_refused(tmp_path):
    settings = PlatformSettings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/nowhere/aw.db")
    with pytest.raises(InvalidConfiguration, match="names a SQLite file in .*nowhere, which does not exist"):
        preflight.check(settings)
    preflight.check(PlatformSettings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/aw.db"))


def test_a_driver_that_is_not_installed_is_named_with_the_fix(tmp_path):
    settings = PlatformSettings(home=tmp_path, database_url="postgresql+nosuchdriver://u:pw@127.0.0.1:1/db")
    with pytest.raises(InvalidConfiguration) as refused:
        preflight.check(settings)
    assert "needs a driver that is not installed" in refused.value.message
    assert "pip install 'agentwharf[server]'" in refused.value.message
    assert ":pw@" not in refused.value.message and "u:***@" in refused.value.message
