"""agentwharf.store: migrations create agentwharf's tables, and models and migrations agree."""

import ast

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from agentwharf.store import database
from agentwharf.store.database import Database, alembic_config, migrate
from agentwharf.store.schema_check import VERSION_TABLE, head_revision, sqlite_schema_is_current
from agentwharf.store.models import Base, Endpoint, ServedEntity


def env_include_object():
    """The ``include_object`` filter of store/migrations/env.py, compiled from its source
    (importing env.py would run the migrations)."""
    env = database.MIGRATIONS_DIR / "env.py"
    tree = ast.parse(env.read_text())
    [func] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "include_object"]
    namespace: dict = {}
    exec(compile(ast.Module(body=[func], type_ignores=[]), str(env), "exec"), namespace)
    return namespace["include_object"]


@pytest.fixture
def db_url(tmp_path):
    url = "sqlite:///" + str(tmp_path / "x.db")
    migrate(url)
    return url


def test_migrate_creates_agentwharf_tables_and_own_version_table(db_url):
    engine = sa.create_engine(db_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
        with engine.connect() as connection:
            versions = connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    finally:
        engine.dispose()
    assert VERSION_TABLE == "aw_alembic_version"
    assert {"aw_endpoints", "aw_served_entities", "aw_alembic_version"} <= tables
    # MLflow owns the default `alembic_version` table in the shared database; never touch it.
    assert "alembic_version" not in tables
    assert all(t.startswith("aw_") for t in tables)
    assert versions == [ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()]


def test_migrate_twice_is_harmless(db_url):
    migrate(db_url)


def test_include_object_only_keeps_agentwharf_tables():
    include = env_include_object()
    assert include(None, "aw_endpoints", "table", True, None)
    assert not include(None, "experiments", "table", True, None)
    assert not include(None, "alembic_version", "table", True, None)


def test_models_and_migrations_do_not_drift(db_url):
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            # An MLflow-like table next to ours must be ignored by the comparison, as in env.py.
            connection.execute(sa.text("CREATE TABLE experiments (id INTEGER PRIMARY KEY)"))
            context = MigrationContext.configure(
                connection,
                opts={"include_object": env_include_object(), "compare_type": True, "version_table": VERSION_TABLE},
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_drift_check_can_see_a_difference(db_url):
    # Guards the test above: a column missing from the database must show up in the diff.
    metadata = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    sa.Table("aw_endpoints", metadata, sa.Column("brand_new", sa.Integer), extend_existing=True)
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"include_object": env_include_object()})
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert any(d[0] == "add_column" and d[3].name == "brand_new" for d in diff)


def test_deleting_an_endpoint_deletes_its_served_entities(db_url):
    db = Database(db_url)
    try:
        with db.session() as session:
            session.add(Endpoint(id="e1", name="agents_echo", entities=[
                ServedEntity(name="echo_1", entity_name="main.default.echo", entity_version="1"),
            ]))
        with db.session() as session:
            endpoint = session.get(Endpoint, "e1")
            assert [e.name for e in endpoint.entities] == ["echo_1"]
            assert endpoint.update_state == "NOT_UPDATING"
            assert endpoint.entities[0].workload_size == "Small"
            # Bypass the ORM cascade: the database's foreign key must do it.
            session.execute(sa.text("DELETE FROM aw_endpoints WHERE id = 'e1'"))
        with db.session() as session:
            assert session.scalars(sa.select(ServedEntity)).all() == []
    finally:
        db.dispose()


def test_endpoint_names_are_unique(db_url):
    db = Database(db_url)
    try:
        with db.session() as session:
            session.add(Endpoint(id="e1", name="agents_echo"))
        with pytest.raises(sa.exc.IntegrityError):
            with db.session() as session:
                session.add(Endpoint(id="e2", name="agents_echo"))
    finally:
        db.dispose()


# -- Asked without Alembic whether `up` must migrate before MLflow's server opens the file ------


def test_head_revision_read_from_the_scripts_is_alembics_head():
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head_revision() == head


def test_a_migrated_database_is_current(db_url):
    assert sqlite_schema_is_current(db_url)


def test_a_database_at_an_older_revision_is_not_current_and_migrating_makes_it_so(tmp_path):
    from alembic import command

    url = "sqlite:///" + str(tmp_path / "old.db")
    older = ScriptDirectory.from_config(alembic_config(url)).get_revision(head_revision()).down_revision
    command.upgrade(alembic_config(url), older)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
    engine.dispose()
    assert not sqlite_schema_is_current(url)
    migrate(url)
    assert sqlite_schema_is_current(url)


def test_a_database_not_in_wal_mode_is_not_current(db_url):
    engine = sa.create_engine(db_url)
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=DELETE")
    engine.dispose()
    assert not sqlite_schema_is_current(db_url)


@pytest.mark.parametrize("make", ["missing", "empty", "no_version_table", "not_sqlite"])
def test_anything_unexpected_is_not_current(tmp_path, make):
    path = tmp_path / "x.db"
    url = "sqlite:///" + str(path)
    if make == "empty":
        path.write_bytes(b"")
    elif make == "no_version_table":
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA journal_mode=WAL")
            connection.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        engine.dispose()
    elif make == "not_sqlite":
        url = "postgresql+psycopg://user@127.0.0.1:1/db"
    assert not sqlite_schema_is_current(url)


def test_two_heads_are_no_head(tmp_path):
    (tmp_path / "a.py").write_text("revision = '0001'\ndown_revision = None\n")
    (tmp_path / "b.py").write_text("revision = '0002'\ndown_revision = '0001'\n")
    assert head_revision(tmp_path) == "0002"
    (tmp_path / "c.py").write_text("revision = '0003'\ndown_revision = '0001'\n")
    assert head_revision(tmp_path) is None
