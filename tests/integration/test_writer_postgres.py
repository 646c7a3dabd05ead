"""The spool writer on PostgreSQL: every writer test of ``tests/unit/test_writer.py`` again,
against a real cluster (each test in a fresh database), and what only PostgreSQL does: ``COPY``
in the usual case, the conflict-skipping path for a replayed batch."""

from __future__ import annotations

from types import SimpleNamespace

import psycopg
import pytest
import sqlalchemy as sa
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from agentwharf.settings import sqlalchemy_url
from agentwharf.store.database import migrate
from agentwharf.tracing.bulk import PostgresInserter
from agentwharf.tracing.writer import SpoolWriter
from tests.unit.test_writer import (  # noqa: F401  (collected here again, with this module's env)
    counts, header, inference_rows, make_record, spool, test_a_record_the_database_refuses_costs_only_itself,
    test_artifact_location_tag_points_into_the_experiment,
    test_checkpoint_advances_and_progress_is_written, test_consumed_segments_are_deleted, test_empty_spool_is_nothing_to_do,
    test_error_request_is_an_error_trace_and_row, test_long_payloads_are_truncated_in_the_inference_row_only,
    test_records_across_gateway_restarts_are_all_stored, test_replay_after_a_crash_stores_nothing_twice,
    test_request_without_experiment_gets_an_inference_row_but_no_trace, test_run_once_stores_one_inference_row_per_request,
    test_run_once_stores_traces_readable_by_mlflow, test_trace_name_is_visible_to_mlflow,
    test_values_longer_than_their_column_are_cut_and_nul_characters_dropped, three,
)

TEMPLATE = "writer_template"


@pytest.fixture(scope="module")
def template(postgres, tmp_path_factory):
    """A database with MLflow's tables, agentwharf's and one experiment, copied for each test
    (``CREATE DATABASE ... TEMPLATE``)."""
    url = postgres.url(TEMPLATE)
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{TEMPLATE}"')
    store = SqlAlchemyStore(sqlalchemy_url(url), str(tmp_path_factory.mktemp("artifacts")))
    experiment_id = store.create_experiment("traces")
    artifact_location = store.get_experiment(experiment_id).artifact_location
    store.engine.dispose()
    migrate(sqlalchemy_url(url))
    return experiment_id, artifact_location


@pytest.fixture
def env(postgres, template, tmp_path):
    experiment_id, artifact_location = template
    name = f"writer_{tmp_path.name}".replace("-", "_").lower()[:60]
    with psycopg.connect(postgres.url("postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    url = sqlalchemy_url(postgres.url(name))
    store = SqlAlchemyStore(url, str(tmp_path / "artifacts"))
    engine = sa.create_engine(url)
    writers = []

    def writer(**kwargs):
        made = SpoolWriter(url, tmp_path / "spool", **kwargs)
        writers.append(made)
        return made

    yield SimpleNamespace(url=url, spool=tmp_path / "spool", experiment_id=experiment_id, store=store,
                          engine=engine, writer=writer, artifact_location=artifact_location)
    for made in writers:
        made.db.dispose()
    engine.dispose()
    store.engine.dispose()


def test_the_writer_copies_in_and_a_replayed_batch_skips_what_is_stored(env):
    three(env)
    first = env.writer()
    assert isinstance(first.inserter, PostgresInserter)
    first.run_once()
    assert first.inserter.replays == 0  # the usual case: COPY straight in
    before = counts(env)
    with env.engine.begin() as c:
        c.execute(sa.text('UPDATE aw_spool_checkpoint SET segment = 0, "offset" = 0'))
    replaying = env.writer()
    assert replaying.run_once() == 3
    assert replaying.inserter.replays == 1
    assert counts(env) == before
    spool(env, [(header("after", env.experiment_id), make_record(7))])
    assert replaying.run_once() == 1 and replaying.inserter.replays == 1  # back to COPY
    assert "after" in inference_rows(env)
