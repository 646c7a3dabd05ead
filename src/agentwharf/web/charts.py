"""The console's live charts: requests/s, p50/p99 latency, error rate and in-flight requests of
one endpoint over the last hour, per minute, from its inference table.

The database does the work (one grouped query, one windowed query for the percentiles), so a
busy endpoint's hour of rows never travels to Python. A row's ``timestamp_ms`` is when the
request finished; a minute's in-flight figure is the average number of requests in progress
during it (Little's law: the latencies of the requests that finished in it, summed, over its
length). The current in-flight count comes from the workers' connections (``in_flight_now``).
Shadow copies' rows (a shadow rollout's candidate) are nobody's traffic: not counted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from agentwharf.serving.routing import worker_key
from agentwharf.serving.supervisor import Supervisor
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint

WINDOW_MS = 3_600_000
BUCKET_MS = 60_000

_TOTALS = text("""
SELECT (timestamp_ms - :start) / :bucket AS b, COUNT(*) AS n,
       SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS errors, SUM(latency_ms) AS busy
FROM aw_inference_log WHERE endpoint = :endpoint AND timestamp_ms >= :start AND timestamp_ms < :end
  AND shadow_of IS NULL
GROUP BY (timestamp_ms - :start) / :bucket
""")
# The nearest-rank percentile (rank = ceil(n * p / 100)) in integer arithmetic, which SQLite and
# PostgreSQL both have.
_PERCENTILES = text("""
SELECT b, rn, n, latency_ms FROM (
  SELECT (timestamp_ms - :start) / :bucket AS b, latency_ms,
         ROW_NUMBER() OVER (PARTITION BY (timestamp_ms - :start) / :bucket ORDER BY latency_ms) AS rn,
         COUNT(*) OVER (PARTITION BY (timestamp_ms - :start) / :bucket) AS n
  FROM aw_inference_log WHERE endpoint = :endpoint AND timestamp_ms >= :start AND timestamp_ms < :end
  AND shadow_of IS NULL
) ranked WHERE rn = (n * 50 + 99) / 100 OR rn = (n * 99 + 99) / 100
""")


def series(db: Database, endpoint: str, now_ms: int, window_ms: int = WINDOW_MS, bucket_ms: int = BUCKET_MS) -> dict[str, Any]:
    """Per-bucket figures for the window ending at ``now_ms`` (the last bucket is the current,
    partial one), oldest first. Buckets without requests are zeros (latencies ``None``)."""
    count = window_ms // bucket_ms
    end = (now_ms // bucket_ms + 1) * bucket_ms
    start = end - count * bucket_ms
    params = {"start": start, "end": end, "bucket": bucket_ms, "endpoint": endpoint}
    points = [{"t": start + i * bucket_ms, "requests": 0, "requests_per_s": 0.0, "error_rate": 0.0, "errors": 0,
               "in_flight": 0.0, "p50_ms": None, "p99_ms": None} for i in range(count)]
    with db.session() as session:
        for b, n, errors, busy in session.execute(_TOTALS, params):
            point = points[int(b)]
            seconds = bucket_ms / 1000 if int(b) < count - 1 else max(1.0, (now_ms - point["t"]) / 1000)
            point.update(requests=n, errors=int(errors or 0), requests_per_s=round(n / seconds, 3),
                         error_rate=round((errors or 0) / n, 4), in_flight=round((busy or 0) / (seconds * 1000), 3))
        for b, rn, n, latency in session.execute(_PERCENTILES, params):
            point = points[int(b)]
            if rn == (n * 50 + 99) // 100:
                point["p50_ms"] = round(latency, 1)
            if rn == (n * 99 + 99) // 100:
                point["p99_ms"] = round(latency, 1)
    return {"bucket_ms": bucket_ms, "start_ms": start, "end_ms": end, "points": points}


def in_flight_now(supervisor: Supervisor, endpoint: Endpoint) -> int:
    """Requests being answered right now by the endpoint's workers."""
    total = 0
    for entity in endpoint.entities:
        version = supervisor.versions.get(worker_key(endpoint.name, entity.name))
        if version is not None:
            total += sum(connection.in_flight for connection in version.ready_connections())
    return total
