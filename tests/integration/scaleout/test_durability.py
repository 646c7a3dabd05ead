"""Nothing lost on PostgreSQL: kill -9 of the whole platform under load (the database server
lives on), then ``up`` again; every acknowledged request is in PostgreSQL exactly once."""

from tests.integration.platform_process import PlatformProcess
from tests.integration.scaleout.conftest import scaleout_env
from tests.integration.test_durability import NO_SPARES, kill_9_under_load_loses_nothing


def test_kill_9_under_load_loses_no_acknowledged_request_on_postgresql(tmp_path, postgres, s3):
    env = {**scaleout_env(postgres, s3, "durability"), **NO_SPARES}
    kill_9_under_load_loses_nothing(PlatformProcess(tmp_path / "home", env=env))
