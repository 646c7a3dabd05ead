"""Alert rules on an endpoint's monitoring metrics, and their webhooks.

A rule names a metric (``trends``: ``error_rate``, ``latency_p95_ms``,
``scorer:<name>:pass_rate``, ``feedback:<name>:positive_rate``...), a comparison and threshold,
a window and a minimum number of samples, optionally one served version. The quality loop
evaluates every rule each ``AGENTWHARF_MONITOR_INTERVAL_SECONDS`` over the last window:

    INSUFFICIENT_DATA ──(enough samples, condition false)──> OK
            │                                                 │  ▲
            └──(enough samples, condition true)──> FIRING <───┘  │ (condition false: "cleared")
                                                      └──────────┘

Going to FIRING makes a ``firing`` event, leaving it for OK a ``cleared`` event (too few samples
changes nothing: a quiet night neither fires nor clears an alert). Each event is logged (WARNING
when firing) and delivered to the rule's webhook: a JSON POST signed with the rule's secret,
retried with back-off (1 s doubling to a minute, ``AGENTWHARF_ALERT_WEBHOOK_ATTEMPTS`` tries).
Events and their delivery state are rows (``aw_alert_events``), so a delivery interrupted by a
restart is retried after it.

The signature, for the receiver to check (``verify`` does it):

    X-Agentwharf-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import operator
import secrets
import time
import uuid
from typing import Any
from urllib.parse import urlparse

import httpx
import orjson
from sqlalchemy import select

from agentwharf.errors import AlreadyExists, InvalidParameter, NotFound
from agentwharf.quality import trends
from agentwharf.store.database import Database
from agentwharf.store.models import AlertEvent, AlertRule, Endpoint
from agentwharf.tls import tls_context

log = logging.getLogger("agentwharf.alerts")

OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
SIGNATURE_HEADER = "X-Agentwharf-Signature"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_BACKOFF_SECONDS = 60.0


def now_ms() -> int:
    return int(time.time() * 1000)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, tolerance_seconds: float = 300.0) -> bool:
    """A receiver's check of ``X-Agentwharf-Signature`` (and that it is recent)."""
    try:
        parts = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(parts["t"])
    except (ValueError, KeyError):
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return abs(time.time() - timestamp) <= tolerance_seconds and hmac.compare_digest(expected, parts.get("v1", ""))


# -- rules ------------------------------------------------------------------------------------


def _check_rule(body: dict) -> dict:
    """The stored fields of a rule from a request body.

    Raises:
        InvalidParameter: a missing or malformed field (the message names it).
    """
    name = body.get("name")
    if not isinstance(name, str) or not name or len(name) > 128 or set(name) - _NAME_CHARS:
        raise InvalidParameter("name must be 1-128 letters, digits, '-', '_' or '.'")
    metric = trends.check_metric(body.get("metric"))
    op = body.get("operator", ">")
    if op not in OPERATORS:
        raise InvalidParameter(f"operator must be one of {', '.join(OPERATORS)}, got {op!r}")
    threshold = body.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InvalidParameter("threshold must be a number")
    window_ms = trends.parse_duration(str(body.get("window", "5m")), "window", 300_000)
    min_samples = body.get("min_samples", 1)
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
        raise InvalidParameter("min_samples must be a whole number of at least 1")
    url = body.get("webhook_url")
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidParameter("webhook_url must be an http:// or https:// URL")
    entity = body.get("served_entity")
    if entity is not None and not isinstance(entity, str):
        raise InvalidParameter("served_entity must be a served entity's name")
    return {"name": name, "metric": metric, "operator": op, "threshold": float(threshold),
            "window_seconds": max(1, window_ms // 1000), "min_samples": min_samples, "webhook_url": url,
            "served_entity": entity}


def rule_view(rule: AlertRule, with_secret: bool = False) -> dict:
    found = {"id": rule.id, "endpoint": rule.endpoint, "name": rule.name, "metric": rule.metric,
             "operator": rule.operator, "threshold": rule.threshold, "window": f"{rule.window_seconds}s",
             "min_samples": rule.min_samples, "webhook_url": rule.webhook_url, "state": rule.state,
             "last_value": rule.last_value, "last_samples": rule.last_samples,
             "last_evaluated_ms": rule.last_evaluated_ms, "changed_ms": rule.changed_ms,
             "created_by": rule.created_by, "created_at": rule.created_at}
    if rule.served_entity:
        found["served_entity"] = rule.served_entity
    if with_secret:
        found["secret"] = rule.secret
    return found


def create(db: Database, endpoint: str, body: dict, who: str | None) -> dict:
    """A new rule; its signing secret is in the answer, and never shown again.

    Raises:
        InvalidParameter: a malformed field.
        AlreadyExists: the endpoint has a rule of that name.
    """
    fields = _check_rule(body)
    with db.session() as session:
        if session.scalar(select(AlertRule.id).where(AlertRule.endpoint == endpoint, AlertRule.name == fields["name"])):
            raise AlreadyExists(f"Endpoint {endpoint!r} has an alert named {fields['name']!r} already")
        rule = AlertRule(id=uuid.uuid4().hex, endpoint=endpoint, secret=secrets.token_urlsafe(32), created_by=who,
                         state="INSUFFICIENT_DATA", created_at=now_ms(), **fields)
        session.add(rule)
        session.flush()
        return rule_view(rule, with_secret=True)


def list_rules(db: Database, endpoint: str | None = None) -> list[dict]:
    with db.session() as session:
        query = select(AlertRule).order_by(AlertRule.endpoint, AlertRule.name)
        if endpoint is not None:
            query = query.where(AlertRule.endpoint == endpoint)
        return [rule_view(rule) for rule in session.scalars(query)]


def delete(db: Database, endpoint: str, name: str) -> None:
    """Raises:
        NotFound: no such rule.
    """
    with db.session() as session:
        rule = session.scalar(select(AlertRule).where(AlertRule.endpoint == endpoint, AlertRule.name == name))
        if rule is None:
            raise NotFound(f"Endpoint {endpoint!r} has no alert named {name!r}")
        session.execute(AlertEvent.__table__.delete().where(AlertEvent.rule_id == rule.id))
        session.delete(rule)


def events(db: Database, endpoint: str, name: str, limit: int = 50) -> list[dict]:
    with db.session() as session:
        rule = session.scalar(select(AlertRule).where(AlertRule.endpoint == endpoint, AlertRule.name == name))
        if rule is None:
            raise NotFound(f"Endpoint {endpoint!r} has no alert named {name!r}")
        rows = session.scalars(select(AlertEvent).where(AlertEvent.rule_id == rule.id)
                               .order_by(AlertEvent.created_ms.desc()).limit(limit)).all()
        return [{"id": e.id, "state": e.state, "value": e.value, "samples": e.samples, "created_ms": e.created_ms,
                 "delivered_ms": e.delivered_ms, "attempts": e.attempts, "last_status": e.last_status,
                 "last_error": e.last_error} for e in rows]


# -- evaluation ---------------------------------------------------------------------------------


def evaluate(db: Database, at_ms: int | None = None) -> list[str]:
    """Evaluate every rule over its last window. Returns the ids of the events made."""
    at_ms = at_ms or now_ms()
    made = []
    with db.session() as session:
        rules = session.scalars(select(AlertRule)).all()
        experiments = dict(session.execute(select(Endpoint.name, Endpoint.experiment_id)).all())
        for rule in rules:
            event = _evaluate_rule(db, rule, experiments.get(rule.endpoint), at_ms)
            if event is not None:
                session.add(event)
                made.append(event.id)
    return made


def _evaluate_rule(db: Database, rule: AlertRule, experiment_id: str | None, at_ms: int) -> AlertEvent | None:
    window = rule.window_seconds * 1000
    found = trends.series(db, rule.endpoint, experiment_id, at_ms - window, at_ms, window)
    if rule.served_entity:
        points = next((v["points"] for v in found["versions"] if v["served_entity"] == rule.served_entity), None)
        point = points[0] if points else trends._empty_point(at_ms - window)
    else:
        point = found["overall"][0]
    value, samples = trends.metric_value(point, rule.metric)
    rule.last_value, rule.last_samples, rule.last_evaluated_ms = value, samples, at_ms
    if value is None or samples < rule.min_samples:
        if rule.state != "FIRING":
            rule.state = "INSUFFICIENT_DATA"
        return None
    crossed = OPERATORS[rule.operator](value, rule.threshold)
    if crossed == (rule.state == "FIRING"):
        if not crossed:
            rule.state = "OK"
        return None
    rule.state, rule.changed_ms = ("FIRING" if crossed else "OK"), at_ms
    state = "firing" if crossed else "cleared"
    payload = {"alert": rule.name, "alert_id": rule.id, "endpoint": rule.endpoint, "served_entity": rule.served_entity,
               "state": state, "metric": rule.metric, "operator": rule.operator, "threshold": rule.threshold,
               "value": value, "samples": samples, "window_seconds": rule.window_seconds, "at_ms": at_ms}
    (log.warning if crossed else log.info)(
        "alert %s on %s %s: %s = %s (%s %s %s over %ss, %d samples)", rule.name, rule.endpoint, state, rule.metric,
        value, "crossed" if crossed else "back within", rule.operator, rule.threshold, rule.window_seconds, samples)
    return AlertEvent(id=uuid.uuid4().hex, rule_id=rule.id, state=state, value=value, samples=samples,
                      payload=orjson.dumps(payload).decode(), created_ms=at_ms, attempts=0, next_attempt_ms=at_ms)


# -- delivery ------------------------------------------------------------------------------------


class Deliveries:
    """Posts events' webhooks; one pass per call of ``deliver_due`` (the quality loop's)."""

    def __init__(self, db: Database, timeout: float, attempts: int, client: httpx.AsyncClient | None = None):
        self.db = db
        self.attempts = attempts
        self.client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=tls_context())

    def _due(self) -> list[tuple[str, str, str, str, int]]:
        with self.db.session() as session:
            rows = session.execute(
                select(AlertEvent.id, AlertEvent.payload, AlertRule.webhook_url, AlertRule.secret, AlertEvent.attempts)
                .join(AlertRule, AlertRule.id == AlertEvent.rule_id)
                .where(AlertEvent.delivered_ms.is_(None), AlertEvent.attempts < self.attempts,
                       AlertEvent.next_attempt_ms <= now_ms())
                .order_by(AlertEvent.created_ms)).all()
            return [tuple(row) for row in rows]

    async def deliver_due(self) -> int:
        """Post every event that is due, at once. Returns how many were delivered."""
        due = await asyncio.to_thread(self._due)
        results = await asyncio.gather(*(self._post(*item) for item in due))
        return sum(results)

    async def _post(self, event_id: str, payload: str, url: str, secret: str, attempts: int) -> bool:
        body = payload.encode()
        headers = {"content-type": "application/json", "user-agent": "agentwharf-alerts",
                   SIGNATURE_HEADER: sign(secret, body, int(time.time()))}
        status, error = None, None
        try:
            response = await self.client.post(url, content=body, headers=headers)
            status = response.status_code
            if status >= 300:
                error = f"the webhook answered {status}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:500]
        attempts += 1
        delivered = error is None
        backoff = min(MAX_BACKOFF_SECONDS, 2.0 ** (attempts - 1))
        if not delivered:
            final = attempts >= self.attempts
            log.warning("alert webhook %s (event %s), attempt %d: %s%s", url, event_id, attempts, error,
                        "; giving up" if final else f"; retrying in {backoff:.0f}s")

        def record() -> None:
            with self.db.session() as session:
                event = session.get(AlertEvent, event_id)
                if event is None:
                    return
                event.attempts, event.last_status, event.last_error = attempts, status, error
                if delivered:
                    event.delivered_ms = now_ms()
                else:
                    event.next_attempt_ms = now_ms() + int(backoff * 1000)

        await asyncio.to_thread(record)
        return delivered

    async def close(self) -> None:
        await self.client.aclose()


def states(db: Database) -> list[dict[str, Any]]:
    """Every rule's endpoint, name and state (for /metrics)."""
    with db.session() as session:
        return [{"endpoint": r.endpoint, "name": r.name, "state": r.state, "value": r.last_value}
                for r in session.scalars(select(AlertRule))]
