"""Trends of an endpoint, per served version and overall, per time bucket: requests, error rate
and latency percentiles (the inference table), each online scorer's pass rate or mean and error
count (``aw_monitor_scores``), and people's feedback (MLflow's ``HUMAN`` feedback assessments
on the endpoint's traces: the playground's thumbs, ``mlflow.log_feedback``, reviewers' labels).

``GET /api/2.0/serving-endpoints/{name}/monitoring``, the console's quality charts and the
alert rules all read ``series``. The database groups and ranks (as ``web.charts`` does); only
per-bucket figures reach Python.

Metrics by name (alert rules and ``metric_value``):

    requests                 requests that finished in the window
    error_rate               share of them answered 4xx/5xx
    latency_p50_ms, latency_p95_ms, latency_p99_ms
    scorer:<name>:pass_rate  share of yes/true among its pass/fail results (errors excluded)
    scorer:<name>:mean       mean of its numeric (or pass/fail as 1/0) results
    scorer:<name>:error_rate share of its results that are errors
    feedback:<name>:positive_rate, feedback:<name>:mean   the same for people's feedback
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import orjson
from sqlalchemy import text

from agentwharf.errors import InvalidParameter
from agentwharf.quality.results import outcome_of
from agentwharf.store.database import Database

MAX_POINTS = 2000
_PERCENTILES = (50, 95, 99)
_METRIC = re.compile(r"^(requests|error_rate|latency_p(50|95|99)_ms|(scorer|feedback):(?P<name>.+):(pass_rate|mean|error_rate|positive_rate))$")

# A rollout's shadow copies (``shadow_of`` set) are figures of the candidate's version only:
# users never saw their answers, so the endpoint's overall figures (and alerts on them) leave
# them out.
_REQUESTS = text("""
SELECT (timestamp_ms - :start) / :bucket AS b, served_entity, COUNT(*) AS n,
       SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS errors,
       CASE WHEN shadow_of IS NULL THEN 0 ELSE 1 END AS shadow
FROM aw_inference_log WHERE endpoint = :endpoint AND timestamp_ms >= :start AND timestamp_ms < :end
GROUP BY 1, 2, 5
""")
# Nearest-rank percentiles (rank = ceil(n * p / 100)) in integer arithmetic, per bucket and
# version (``by_entity``) or per bucket.
_RANKED = """
SELECT b, entity, rn, n, latency_ms FROM (
  SELECT (timestamp_ms - :start) / :bucket AS b, {entity} AS entity, latency_ms,
         ROW_NUMBER() OVER (PARTITION BY (timestamp_ms - :start) / :bucket{partition} ORDER BY latency_ms) AS rn,
         COUNT(*) OVER (PARTITION BY (timestamp_ms - :start) / :bucket{partition}) AS n
  FROM aw_inference_log WHERE endpoint = :endpoint AND timestamp_ms >= :start AND timestamp_ms < :end{live}
) ranked WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 95 + 99) / 100 OR rn = (n * 99 + 99) / 100
"""
_BY_ENTITY = text(_RANKED.format(entity="served_entity", partition=", served_entity", live=""))
_OVERALL = text(_RANKED.format(entity="NULL", partition="", live=" AND shadow_of IS NULL"))
# Scores of shadow copies' traces: the copies' rows are found once (an uncorrelated subquery,
# over the window and a margin, since a row's time and its score's answer time differ slightly).
_SHADOW_TRACES = """SELECT trace_id FROM aw_inference_log WHERE endpoint = :endpoint AND shadow_of IS NOT NULL
  AND timestamp_ms >= :start - 600000 AND timestamp_ms < :end + 600000"""
_SCORES = text(f"""
SELECT (answered_ms - :start) / :bucket AS b, served_entity, scorer, outcome, COUNT(*) AS n, SUM(value) AS total,
       CASE WHEN trace_id IN ({_SHADOW_TRACES}) THEN 1 ELSE 0 END AS shadow
FROM aw_monitor_scores WHERE endpoint = :endpoint AND answered_ms >= :start AND answered_ms < :end
GROUP BY 1, 2, 3, 4, 7
""")
_FEEDBACK = text("""
SELECT (a.trace_timestamp_ms - :start) / :bucket AS b, m.value AS entity, a.name, a.value, COUNT(*) AS n
FROM assessments a LEFT JOIN trace_request_metadata m
  ON m.request_id = a.trace_id AND m.key = 'agentwharf.served_entity'
WHERE a.experiment_id = :experiment AND a.trace_timestamp_ms >= :start AND a.trace_timestamp_ms < :end
  AND a.source_type = 'HUMAN' AND a.assessment_type = 'feedback' AND a.valid = :valid AND a.error IS NULL
GROUP BY (a.trace_timestamp_ms - :start) / :bucket, m.value, a.name, a.value
""")


def parse_duration(value: str | None, name: str, default_ms: int) -> int:
    """``90`` (seconds), ``90s``, ``5m``, ``1h``, ``1d`` -> milliseconds."""
    if value in (None, ""):
        return default_ms
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", value)
    if not match:
        raise InvalidParameter(f"{name} must be a duration such as 60s, 5m, 1h or 1d, got {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    milliseconds = int(number * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit])
    if milliseconds <= 0:
        raise InvalidParameter(f"{name} must be longer than 0, got {value!r}")
    return milliseconds


def check_metric(metric: str) -> str:
    """Raises:
        InvalidParameter: not one of the metrics above (the message lists them).
    """
    if not isinstance(metric, str) or not _METRIC.match(metric):
        raise InvalidParameter(f"metric must be one of requests, error_rate, latency_p50_ms, latency_p95_ms, latency_p99_ms, "
                               f"scorer:<name>:pass_rate|mean|error_rate, feedback:<name>:positive_rate|mean; got {metric!r}")
    return metric


def _empty_point(t: int) -> dict[str, Any]:
    return {"t": t, "requests": 0, "errors": 0, "error_rate": None, "p50_ms": None, "p95_ms": None, "p99_ms": None,
            "scorers": {}, "feedback": {}}


def _rate(counts: dict) -> None:
    """Fill a scorer's (or feedback's) rates from its counts."""
    judged = counts["pass"] + counts["fail"]
    numeric = judged + counts["value_n"]
    counts["pass_rate"] = round(counts["pass"] / judged, 4) if judged else None
    counts["positive_rate"] = counts["pass_rate"]
    counts["mean"] = round((counts["pass"] + counts["value_sum"]) / numeric, 4) if numeric else None
    counts["error_rate"] = round(counts["errors"] / counts["count"], 4) if counts["count"] else None


def _counts() -> dict:
    return {"count": 0, "pass": 0, "fail": 0, "value_n": 0, "value_sum": 0.0, "errors": 0}


def _add(counts: dict, outcome: str, n: int, total: float | None) -> None:
    counts["count"] += n
    if outcome == "pass":
        counts["pass"] += n
    elif outcome == "fail":
        counts["fail"] += n
    elif outcome == "value":
        counts["value_n"] += n
        counts["value_sum"] += float(total or 0.0)
    elif outcome == "error":
        counts["errors"] += n


def series(db: Database, endpoint: str, experiment_id: str | None, start: int, end: int, bucket: int) -> dict[str, Any]:
    """Per-bucket figures of ``[start, end)``, oldest first, overall and per served version."""
    count = max(1, -(-(end - start) // bucket))
    if count > MAX_POINTS:
        raise InvalidParameter(f"That is {count} buckets; at most {MAX_POINTS} (use a longer bucket or a shorter range)")
    params = {"start": start, "end": end, "bucket": bucket, "endpoint": endpoint}
    overall = [_empty_point(start + i * bucket) for i in range(count)]
    versions: dict[str, list[dict]] = {}

    def point(entity: str | None, b: int) -> dict:
        if entity is None:
            return overall[int(b)]
        points = versions.setdefault(entity, [_empty_point(start + i * bucket) for i in range(count)])
        return points[int(b)]

    scorer_counts: dict[tuple, dict] = defaultdict(_counts)
    feedback_counts: dict[tuple, dict] = defaultdict(_counts)
    with db.session() as session:
        for b, entity, n, errors, shadow in session.execute(_REQUESTS, params):
            for target in (point(entity or "", b),) if shadow else (point(None, b), point(entity or "", b)):
                target["requests"] += n
                target["errors"] += int(errors or 0)
        for query in (_OVERALL, _BY_ENTITY):
            for b, entity, rn, n, latency in session.execute(query, params):
                target = point(None if query is _OVERALL else (entity or ""), b)
                for p in _PERCENTILES:
                    if rn == (n * p + 99) // 100:
                        target[f"p{p}_ms"] = round(latency, 1)
        for b, entity, scorer, outcome, n, total, shadow in session.execute(_SCORES, params):
            for key in ((entity or "", b, scorer),) if shadow else ((None, b, scorer), (entity or "", b, scorer)):
                _add(scorer_counts[key], outcome, n, total)
        if experiment_id is not None:
            try:
                rows = session.execute(_FEEDBACK, {**params, "experiment": int(experiment_id), "valid": True}).all()
            except Exception:  # MLflow's tables as MLflow made them; should never fail
                rows = []
            for b, entity, name, raw, n in rows:
                try:
                    value = orjson.loads(raw)
                except (orjson.JSONDecodeError, TypeError):
                    value = raw
                outcome, number = outcome_of(value, False)
                for key in ((None, b, name), (entity or "", b, name)):
                    _add(feedback_counts[key], outcome, n, number * n if outcome == "value" else None)
    for (entity, b, name), counts in scorer_counts.items():
        _rate(counts)
        point(entity, b)["scorers"][name] = counts
    for (entity, b, name), counts in feedback_counts.items():
        _rate(counts)
        point(entity, b)["feedback"][name] = counts
    for points in [overall, *versions.values()]:
        for p in points:
            p["error_rate"] = round(p["errors"] / p["requests"], 4) if p["requests"] else None
    return {"start_ms": start, "end_ms": end, "bucket_ms": bucket, "overall": overall,
            "versions": [{"served_entity": entity, "points": points} for entity, points in sorted(versions.items())]}


def metric_value(point: dict, metric: str) -> tuple[float | None, int]:
    """(the metric's value in one bucket, how many samples it rests on)."""
    if metric == "requests":
        return float(point["requests"]), point["requests"]
    if metric == "error_rate":
        return point["error_rate"], point["requests"]
    if metric.startswith("latency_p"):
        return point[metric[len("latency_"):]], point["requests"]
    kind, _, rest = metric.partition(":")
    name, _, figure = rest.rpartition(":")
    counts = point["scorers" if kind == "scorer" else "feedback"].get(name)
    if counts is None:
        return None, 0
    samples = {"pass_rate": counts["pass"] + counts["fail"], "positive_rate": counts["pass"] + counts["fail"],
               "mean": counts["pass"] + counts["fail"] + counts["value_n"], "error_rate": counts["count"]}[figure]
    return counts[figure], samples
