"""Alembic environment for agentwharf's tables only (MLflow migrates its own)."""

from alembic import context
from sqlalchemy import pool, engine_from_config

from agentwharf.store.schema_check import VERSION_TABLE
from agentwharf.store.models import Base

config = context.config
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to):
    # The database also holds MLflow's tables; autogenerate must never touch them.
    if type_ == "table":
        return name.startswith("aw_")
    return True


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is None:
        connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
            include_object=include_object,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
