"""platform.early_start: the home is ready for MLflow's server before it is launched."""

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from agentwharf.platform.early_start import prepare_home
from agentwharf.settings import PlatformSettings
from agentwharf.store.database import alembic_config
from agentwharf.store.schema_check import VERSION_TABLE, head_revision, sqlite_schema_is_current


def _version(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    finally:
        engine.dispose()


def test_a_new_home_gets_agentwharfs_tables_in_wal_mode(tmp_path):
    settings = PlatformSettings(home=tmp_path / "home")
    prepare_home(settings)
    assert _version(settings.database_uri) == [head_revision()]
    assert sqlite_schema_is_current(settings.database_uri)
    assert (settings.home / "logs").is_dir()


def test_a_home_made_by_an_older_version_is_migrated_before_mlflow_starts(tmp_path):
    settings = PlatformSettings(home=tmp_path / "home")
    settings.home.mkdir()
    url = settings.database_uri
    older = ScriptDirectory.from_config(alembic_config(url)).get_revision(head_revision()).down_revision
    command.upgrade(alembic_config(url), older)
    assert _version(url) == [older]
    prepare_home(settings)
    assert _version(url) == [head_revision()]


def test_a_current_home_launches_mlflow_without_importing_alembic(tmp_path):
    """Alembic and SQLAlchemy take ~0.5 s to import: a home migrated long ago does not wait
    for them before MLflow's server is launched (a new or older home does, as above)."""
    import subprocess
    import sys

    settings = PlatformSettings(home=tmp_path / "home")
    prepare_home(settings)
    script = ("import sys; from pathlib import Path; from agentwharf.settings import PlatformSettings; "
              "from agentwharf.platform.early_start import prepare_home; "
              f"prepare_home(PlatformSettings(home=Path({str(settings.home)!r}))); "
              "print(sorted(m for m in ('alembic', 'sqlalchemy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert sqlite_schema_is_current(settings.database_uri)
