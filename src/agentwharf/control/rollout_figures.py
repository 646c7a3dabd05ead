"""A version's figures over a rollout's window, read where they already are: requests, errors
and latencies from the inference table, scorers' results from MLflow's assessments on those
requests' traces (both tables live in the platform's one database). Whoever scored a trace (the
platform's online scoring, MLflow's job runner, a person in the review app) counts the same.
Shadow copies' rows (``shadow_of`` set) are a version's figures only in a shadow stage, and
live rows only otherwise, so neither kind ever mixes into the other's window."""

from __future__ import annotations

from sqlalchemy import bindparam, text

from agentwharf.control.rollout_gates import Figures
from agentwharf.store.database import Database

_REQUESTS = "SELECT status_code, latency_ms, trace_id FROM aw_inference_log " \
    "WHERE endpoint = :endpoint AND served_entity = :entity AND timestamp_ms >= :since AND shadow_of IS {}"
_LIVE, _SHADOW = text(_REQUESTS.format("NULL")), text(_REQUESTS.format("NOT NULL"))
# The newest valid feedback per (trace, scorer); an errored scorer call is no evidence.
_SCORES = text(
    "SELECT trace_id, name, value, last_updated_timestamp FROM assessments "
    "WHERE assessment_type = 'feedback' AND error IS NULL AND valid AND name IN :names AND trace_id IN :traces"
).bindparams(bindparam("names", expanding=True), bindparam("traces", expanding=True))
#: Trace ids per query (SQLite's bound-parameter limit is 32766).
_CHUNK = 2000


def window(db: Database, endpoint: str, entity: str, since_ms: int, scorers: list[str], shadow: bool = False) -> Figures:
    """``entity``'s figures on ``endpoint`` since ``since_ms``: its live requests, or (``shadow``)
    the shadow copies it answered. A request the platform refused before the model saw it (4xx)
    is the caller's, not the version's: not counted."""
    figures = Figures()
    traces: list[str] = []
    with db.engine.connect() as connection:
        for status, latency, trace_id in connection.execute(_SHADOW if shadow else _LIVE, {"endpoint": endpoint, "entity": entity, "since": since_ms}):
            if 400 <= status < 500:
                continue
            figures.requests += 1
            figures.errors += status >= 500
            figures.latencies_ms.append(float(latency))
            if trace_id:
                traces.append(trace_id)
        if scorers and traces:
            figures.scores = _scores(connection, scorers, traces)
    return figures


def _scores(connection, scorers: list[str], traces: list[str]) -> dict[str, list]:
    newest: dict[tuple[str, str], tuple[int, str]] = {}
    for start in range(0, len(traces), _CHUNK):
        rows = connection.execute(_SCORES, {"names": scorers, "traces": traces[start:start + _CHUNK]})
        for trace_id, name, value, updated in rows:
            if (trace_id, name) not in newest or updated > newest[(trace_id, name)][0]:
                newest[(trace_id, name)] = (updated, value)
    scores: dict[str, list] = {name: [] for name in scorers}
    for (_, name), (_, value) in newest.items():
        scores[name].append(value)
    return scores
