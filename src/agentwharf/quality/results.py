"""Writing online scoring's results: MLflow assessments on the traces, and the number of each
in ``aw_monitor_scores`` (what trends, alerts and Prometheus read).

Many results go in one transaction (the scoring process flushes every ~100 ms): MLflow's own
``create_assessment`` is one transaction per assessment, and at 50 traces a second with three
scorers that would be 150 commits (and fsyncs) a second against the writer's. The rows are built
by MLflow's own mapping (``SqlAssessments.from_mlflow_entity``), as its store builds them, and
inserted with one statement for the batch: the ORM's unit of work (``add_all``, ``flush``) on
them was ~15% of the scoring process's CPU, for rows that need none of it (no relationship set,
every column given by the mapping).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, inspect

from agentwharf.store.models import MonitorScore, ScoringQueue

log = logging.getLogger("agentwharf.quality.results")

_PASS = {"yes", "true", "pass", "passed", "correct", "safe"}
_FAIL = {"no", "false", "fail", "failed", "incorrect", "unsafe"}


def outcome_of(value: Any, error: bool) -> tuple[str, float | None]:
    """(``pass``/``fail``/``value``/``other``/``error``, the number) of one feedback's value."""
    if error:
        return "error", None
    if isinstance(value, bool):
        return ("pass", 1.0) if value else ("fail", 0.0)
    if isinstance(value, (int, float)):
        return ("value", float(value)) if math.isfinite(value) else ("other", None)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _PASS:
            return "pass", 1.0
        if word in _FAIL:
            return "fail", 0.0
    return "other", None


@dataclass
class Result:
    """One scorer's feedbacks on one trace, ready to write."""

    trace: Any  # mlflow.entities.Trace
    scorer: str
    version: int | None
    feedbacks: list  # mlflow.entities.Feedback
    endpoint: str
    served_entity: str | None
    answered_ms: int


def _assessment_rows(result: Result) -> list:
    from mlflow.store.tracking.dbmodels.models import SqlAssessments
    from mlflow.tracing.constant import AssessmentMetadataKey

    info = result.trace.info
    root = result.trace.data._get_root_span()
    rows = []
    for feedback in result.feedbacks:
        feedback.trace_id = info.trace_id
        if root is not None:
            feedback.span_id = root.span_id
        if result.version is not None:
            feedback.metadata = {**(feedback.metadata or {}), AssessmentMetadataKey.SCORER_NAME: result.scorer,
                                 AssessmentMetadataKey.SCORER_VERSION: str(result.version)}
        row = SqlAssessments.from_mlflow_entity(feedback)
        row.experiment_id = int(info.experiment_id)
        row.trace_timestamp_ms = info.timestamp_ms
        rows.append(row)
    return rows


def _column_values(rows: list) -> list[dict]:
    """The column values MLflow's mapping gave ``rows`` (ORM objects of one class)."""
    if not rows:
        return []
    columns = [(prop.key, prop.columns[0].key) for prop in inspect(type(rows[0])).column_attrs]
    return [{column: getattr(row, attribute) for attribute, column in columns} for row in rows]


def _score_rows(result: Result, scored_ms: int) -> list[dict]:
    rows = []
    for feedback in result.feedbacks:
        outcome, value = outcome_of(feedback.value, feedback.error is not None)
        rows.append({"trace_id": result.trace.info.trace_id, "scorer": feedback.name or result.scorer,
                     "endpoint": result.endpoint, "served_entity": result.served_entity,
                     "answered_ms": result.answered_ms, "scored_ms": scored_ms, "outcome": outcome, "value": value,
                     "error_code": feedback.error.error_code if feedback.error is not None else None})
    return rows


def _insert_ignoring(session, table, rows: list[dict]) -> None:
    if not rows:
        return
    statement = insert(table)
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":  # not OR IGNORE, which would also drop rows that break NOT NULL or CHECK
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table).on_conflict_do_nothing()
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(table).on_conflict_do_nothing()
    session.execute(statement, rows)


def write(store, results: list[Result], finished_seqs: list[int]) -> int:
    """Write ``results`` and drop the finished traces from the queue, in one transaction.
    Returns the commit time (epoch ms). A trace deleted meanwhile makes the batch fail: then
    each result is written alone and the ones that cannot be are dropped (logged)."""
    try:
        return _write(store, results, finished_seqs)
    except Exception:
        if len(results) <= 1:
            log.warning("could not write the assessment of %s (trace deleted?)",
                        [r.trace.info.trace_id for r in results], exc_info=True)
            _write(store, [], finished_seqs)
            return int(time.time() * 1000)
    for result in results:
        try:
            _write(store, [result], [])
        except Exception:
            log.warning("dropped the assessment of scorer %r on trace %s (trace deleted?)", result.scorer,
                        result.trace.info.trace_id, exc_info=True)
    return _write(store, [], finished_seqs)


def _write(store, results: list[Result], finished_seqs: list[int]) -> int:
    from mlflow.store.tracking.dbmodels.models import SqlAssessments

    scored_ms = int(time.time() * 1000)
    with store.ManagedSessionMaker(read_only=False) as session:
        if assessments := _column_values([row for result in results for row in _assessment_rows(result)]):
            session.execute(insert(SqlAssessments.__table__), assessments)
        _insert_ignoring(session, MonitorScore.__table__, [row for r in results for row in _score_rows(r, scored_ms)])
        if finished_seqs:
            session.execute(delete(ScoringQueue.__table__).where(ScoringQueue.__table__.c.seq.in_(finished_seqs)))
    return scored_ms
