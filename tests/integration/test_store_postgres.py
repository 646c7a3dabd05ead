"""agentwharf's store on PostgreSQL: the migrations of ``tests/unit/test_store.py`` again, each
test in a fresh database of a real cluster (models and migrations agree there too, types
compared; cascades and unique names are the database's own)."""

from __future__ import annotations

import pytest

from agentwharf.settings import sqlalchemy_url
from agentwharf.store.database import migrate
from tests.unit.test_store import (  # noqa: F401  (collected here again, with this module's db_url)
    test_migrate_creates_agentwharf_tables_and_own_version_table,
    test_migrate_twice_is_harmless,
    test_models_and_migrations_do_not_drift,
    test_drift_check_can_see_a_difference,
    test_deleting_an_endpoint_deletes_its_served_entities,
    test_endpoint_names_are_unique,
)

@pytest.fixture
def db_url(postgres):
    url = sqlalchemy_url(postgres.create_database("store"))
    migrate(url)
    return url
