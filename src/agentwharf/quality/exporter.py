"""The quality loop's Prometheus metrics, refreshed by the quality loop and read at scrape time
(a scrape never queries the database):

    agentwharf_online_assessments_total{endpoint,served_entity,scorer,outcome}   counter
    agentwharf_monitor_scorer_pass_rate{endpoint,served_entity,scorer}           last window
    agentwharf_monitor_scorer_mean{endpoint,served_entity,scorer}                last window
    agentwharf_monitor_scorer_error_rate{endpoint,served_entity,scorer}          last window
    agentwharf_monitor_feedback_positive_rate{endpoint,served_entity,name}       last window
    agentwharf_monitor_error_rate{endpoint,served_entity}                        last window
    agentwharf_monitor_latency_ms{endpoint,served_entity,quantile}               last window
    agentwharf_scoring_queue_traces                                               waiting now
    agentwharf_alert_firing{endpoint,alert}                                       1 while firing

``served_entity`` is empty for the endpoint as a whole. The counter adds up the new rows of
``aw_monitor_scores`` at each refresh (by id, so each result counts once, pruning or not); the
window figures are ``trends.series`` over the last ``WINDOW_MS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from agentwharf.quality import alerts, trends
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint, MonitorScore, ScoringQueue

WINDOW_MS = 300_000
_ENTITY = ["endpoint", "served_entity"]


@dataclass
class QualitySnapshot:
    counts: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    last_id: int = 0
    windows: dict[str, dict] = field(default_factory=dict)
    queue: int = 0
    alert_states: list[dict] = field(default_factory=list)

    def refresh(self, db: Database, now_ms: int) -> None:
        with db.session() as session:
            rows = session.execute(
                select(MonitorScore.endpoint, MonitorScore.served_entity, MonitorScore.scorer, MonitorScore.outcome,
                       func.count(), func.max(MonitorScore.id))
                .where(MonitorScore.id > self.last_id)
                .group_by(MonitorScore.endpoint, MonitorScore.served_entity, MonitorScore.scorer, MonitorScore.outcome)).all()
            endpoints = dict(session.execute(select(Endpoint.name, Endpoint.experiment_id)).all())
            self.queue = session.scalar(select(func.count()).select_from(ScoringQueue)) or 0
        for endpoint, entity, scorer, outcome, count, top in rows:
            key = (endpoint, entity or "", scorer, outcome)
            self.counts[key] = self.counts.get(key, 0) + count
            self.last_id = max(self.last_id, top)
        self.windows = {name: trends.series(db, name, experiment, now_ms - WINDOW_MS, now_ms, WINDOW_MS)
                        for name, experiment in endpoints.items()}
        self.alert_states = alerts.states(db)

    def families(self):
        total = CounterMetricFamily("agentwharf_online_assessments", "Online scoring results written on live traces, by "
                                    "scorer and outcome (pass, fail, value, other, error).",
                                    labels=[*_ENTITY, "scorer", "outcome"])
        for labels, count in sorted(self.counts.items()):
            total.add_metric(list(labels), count)
        yield total
        yield from self._window_families()
        yield GaugeMetricFamily("agentwharf_scoring_queue_traces", "Stored traces waiting for online scoring.",
                                value=self.queue)
        firing = GaugeMetricFamily("agentwharf_alert_firing", "1 while an alert rule fires.", labels=["endpoint", "alert"])
        for state in self.alert_states:
            firing.add_metric([state["endpoint"], state["name"]], 1 if state["state"] == "FIRING" else 0)
        yield firing

    def _window_families(self):
        window = f"over the last {WINDOW_MS // 60000} minutes"
        scorer = {figure: GaugeMetricFamily(f"agentwharf_monitor_scorer_{figure}", f"Online scorer {figure} {window}.",
                                            labels=[*_ENTITY, "scorer"]) for figure in ("pass_rate", "mean", "error_rate")}
        feedback = GaugeMetricFamily("agentwharf_monitor_feedback_positive_rate", f"Share of positive user feedback "
                                     f"{window}.", labels=[*_ENTITY, "name"])
        errors = GaugeMetricFamily("agentwharf_monitor_error_rate", f"Share of requests answered 4xx/5xx {window}.",
                                   labels=_ENTITY)
        latency = GaugeMetricFamily("agentwharf_monitor_latency_ms", f"Request latency percentiles {window}.",
                                    labels=[*_ENTITY, "quantile"])
        for endpoint, found in sorted(self.windows.items()):
            points = [("", found["overall"][0])] + [(v["served_entity"], v["points"][0]) for v in found["versions"]]
            for entity, point in points:
                for name, counts in sorted(point["scorers"].items()):
                    for figure, family in scorer.items():
                        if counts.get(figure) is not None:
                            family.add_metric([endpoint, entity, name], counts[figure])
                for name, counts in sorted(point["feedback"].items()):
                    if counts.get("positive_rate") is not None:
                        feedback.add_metric([endpoint, entity, name], counts["positive_rate"])
                if point["error_rate"] is not None:
                    errors.add_metric([endpoint, entity], point["error_rate"])
                for q in (50, 95, 99):
                    if point[f"p{q}_ms"] is not None:
                        latency.add_metric([endpoint, entity, f"0.{q}"], point[f"p{q}_ms"])
        yield from scorer.values()
        yield from (feedback, errors, latency)
