"""The console's quality panel: what production monitoring found on one endpoint over the last
hour. Each online scorer's pass rate (or mean) and error rate, and people's feedback, per served
version and overall; per-minute charts of them; the endpoint's alert rules and their state.

The figures are ``quality.trends``', the same the monitoring API
(``GET /api/2.0/serving-endpoints/{name}/monitoring``), ``agentwharf monitor trends`` and the
alert rules read, so the console never disagrees with them.
"""

from __future__ import annotations

from typing import Any

from agentwharf.quality import alerts, trends
from agentwharf.store.database import Database

WINDOW_MS = 3_600_000
BUCKET_MS = 60_000
#: How the tables name figures recorded without a served version (rows from before a version
#: was named, or an agent called outside an endpoint).
NO_VERSION = "(no version)"


def _figure(counts: dict) -> str:
    """What a scorer's (or feedback's) chart plots: pass rate for yes/no results, else the mean."""
    return "pass_rate" if counts["pass"] + counts["fail"] else "mean"


def _rows(kind: str, columns: list[tuple[str, dict]]) -> list[dict[str, Any]]:
    """One row per (name, version) of ``kind`` ("scorers" or "feedback"), all versions first."""
    rows = []
    for version, point in columns:
        for name, counts in sorted(point[kind].items()):
            rows.append({"name": name, "version": version or NO_VERSION, "figure": _figure(counts), **counts})
    rows.sort(key=lambda row: (row["name"], row["version"] != "All versions"))
    return rows


def summary(db: Database, endpoint: str, experiment_id: str | None, now_ms: int) -> dict[str, Any]:
    """The panel's tables: the last hour as one bucket, overall and per served version."""
    found = trends.series(db, endpoint, experiment_id, now_ms - WINDOW_MS, now_ms + 1, WINDOW_MS + 1)
    columns = [("All versions", found["overall"][0])]
    columns += [(v["served_entity"], v["points"][0]) for v in found["versions"]]
    scorers, feedback = _rows("scorers", columns), _rows("feedback", columns)
    return {"scorers": scorers, "feedback": feedback, "alerts": alerts.list_rules(db, endpoint),
            "charts": _charts(scorers, "scorer") + _charts(feedback, "feedback")}


def _charts(rows: list[dict], kind: str) -> list[dict[str, str]]:
    """One chart per scorer (or feedback name), plotting the figure its overall row has; none
    for results that are only text (a comment, a label's free text)."""
    return [{"kind": kind, "name": row["name"], "figure": row["figure"]} for row in rows
            if row["version"] == "All versions" and row[row["figure"]] is not None]


def series(db: Database, endpoint: str, experiment_id: str | None, now_ms: int) -> dict[str, Any]:
    """The charts' data: the last hour per minute, per served version (the last bucket is the
    current, partial minute)."""
    end = (now_ms // BUCKET_MS + 1) * BUCKET_MS
    return trends.series(db, endpoint, experiment_id, end - WINDOW_MS, end, BUCKET_MS)
