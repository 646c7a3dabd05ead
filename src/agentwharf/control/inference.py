"""Reading the inference table: filters and cursor paging, newest rows last.

The cursor is ``(timestamp_ms, request_id)`` of the last row returned, so paging is stable
while new rows keep arriving.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, or_, select

from agentwharf.errors import InvalidParameter
from agentwharf.store.database import Database
from agentwharf.store.models import InferenceLog

MAX_PAGE = 10_000
_INT64 = 2**63 - 1


def _in_range(value: int, name: str) -> int:
    if not -_INT64 <= value <= _INT64:
        raise InvalidParameter(f"{name} is out of range: {value}")
    return value
_COLUMNS = [c.name for c in InferenceLog.__table__.columns]


def parse_time(value: str | None, name: str) -> int | None:
    """Epoch milliseconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if value in (None, ""):
        return None
    if value.isdigit():
        return _in_range(int(value), name)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"{name} must be epoch milliseconds or an ISO 8601 time, got {value!r}") from None
    if parsed.tzinfo is None:
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return _in_range(int(parsed.timestamp() * 1000), name)


def _encode_cursor(row: InferenceLog) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([row.timestamp_ms, row.request_id])).decode()


def _decode_cursor(token: str) -> tuple[int, str]:
    try:
        ts, request_id = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return _in_range(int(ts), "page_token"), str(request_id)
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidParameter("page_token is not a token this API returned") from None


def row_json(row: InferenceLog) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _COLUMNS}


def query(db: Database, endpoint: str, *, since: str | None = None, until: str | None = None, status: str | None = None,
          page_token: str | None = None, max_results: str | None = None,
          client_request_id: str | None = None) -> dict[str, Any]:
    limit = 1000 if max_results in (None, "") else _int(max_results, "max_results")
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidParameter(f"max_results must be between 1 and {MAX_PAGE}")
    conditions = [InferenceLog.endpoint == endpoint]
    if (start := parse_time(since, "since")) is not None:
        conditions.append(InferenceLog.timestamp_ms >= start)
    if (end := parse_time(until, "until")) is not None:
        conditions.append(InferenceLog.timestamp_ms < end)
    if status not in (None, ""):
        conditions.append(_status_condition(status))
    if client_request_id:
        conditions.append(InferenceLog.client_request_id == client_request_id)
    if page_token:
        ts, request_id = _decode_cursor(page_token)
        conditions.append(or_(InferenceLog.timestamp_ms > ts, and_(InferenceLog.timestamp_ms == ts, InferenceLog.request_id > request_id)))
    with db.session() as session:
        rows = list(session.scalars(
            select(InferenceLog).where(*conditions).order_by(InferenceLog.timestamp_ms, InferenceLog.request_id).limit(limit + 1)
        ))
    more = len(rows) > limit
    rows = rows[:limit]
    answer: dict[str, Any] = {"rows": [row_json(r) for r in rows]}
    if more:
        answer["next_page_token"] = _encode_cursor(rows[-1])
    return answer


def count(db: Database, endpoint: str) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(InferenceLog).where(InferenceLog.endpoint == endpoint)) or 0


def _int(value: str, name: str) -> int:
    try:
        return _in_range(int(value), name)
    except ValueError:
        raise InvalidParameter(f"{name} must be an integer, got {value!r}") from None


def _status_condition(status: str):
    """``200``, ``5xx`` or ``error`` (any status >= 400)."""
    if status == "error":
        return InferenceLog.status_code >= 400
    if len(status) == 3 and status[0].isdigit() and status[1:].lower() == "xx":
        base = int(status[0]) * 100
        return and_(InferenceLog.status_code >= base, InferenceLog.status_code < base + 100)
    return InferenceLog.status_code == _int(status, "status")
