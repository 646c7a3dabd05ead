"""``GET /metrics``: the platform's Prometheus metrics, with ``prometheus_client``.

Request metrics are observed by the gateway as requests finish (``observe_*``); everything that
is state (the spool, the writer, workers, environment builds) is read when Prometheus scrapes,
by a collector, so the hot path pays for nothing it does not change. Each platform has a
registry of its own (no module-level state); the platform process's own metrics (CPU, memory,
open files) come from ``ProcessCollector``, each worker's memory from ``/proc``.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agentwharf.serving.endpoint_metrics import EndpointMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Request latency buckets (seconds): agents answer in milliseconds (an echo) to minutes (LLM loops).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_ENTITY = ("endpoint", "served_entity")


class PlatformMetrics:
    def __init__(self, platform, state: object | None = None):
        """``state``: the collector of what is read at scrape time (default: the platform's
        whole state; a gateway process has only its spool, ``SpoolCollector``)."""
        self.platform = platform
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("agentwharf_requests", "Requests answered by the gateway, by endpoint, served entity "
                                "and HTTP status.", (*_ENTITY, "status"), registry=self.registry)
        self.latency = Histogram("agentwharf_request_duration_seconds", "Whole request time at the gateway, until the "
                                 "answer (or the stream's end) is sent.", _ENTITY, buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.first_event = Histogram("agentwharf_stream_first_event_seconds", "Time to the first event of a streamed "
                                     "answer.", _ENTITY, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("agentwharf_requests_in_flight", "Requests a worker is answering now.", _ENTITY,
                               registry=self.registry)
        self.registry.register(state if state is not None else _StateCollector(platform))
        ProcessCollector(registry=self.registry)
        #: The last minute per endpoint, in Databricks' export_metrics shape (its own window).
        self.endpoint_window = EndpointMetrics()
        #: (endpoint, entity) -> the metric children, so a request costs no label lookups.
        self._children: dict[tuple[str, str], tuple] = {}

    def _of(self, endpoint: str, entity: str | None) -> tuple:
        key = (endpoint, entity or "")
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.latency.labels(*key), self.first_event.labels(*key),
                                              self.in_flight.labels(*key))
        return children

    # -- what the gateway reports ----------------------------------------------------------------

    def observe_request(self, endpoint: str, entity: str | None, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, entity or "", str(status)).inc()
        self._of(endpoint, entity)[0].observe(seconds)
        self.endpoint_window.observe(endpoint, status, seconds * 1000)

    def observe_first_event(self, endpoint: str, entity: str | None, seconds: float) -> None:
        self._of(endpoint, entity)[1].observe(seconds)

    def in_flight_of(self, endpoint: str, entity: str | None) -> Gauge:
        return self._of(endpoint, entity)[2]

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Metrics read from the platform's state at scrape time."""

    def __init__(self, platform):
        self.platform = platform

    def describe(self):
        return []  # built at scrape time; nothing to check at registration

    def collect(self):
        yield from self._spool()
        yield from self._workers()
        builds = CounterMetricFamily("agentwharf_environment_builds", "Model environments prepared, by outcome "
                                     "(built, reused, failed).", labels=["outcome"])
        for outcome, count in sorted(self.platform.environments.builds.items()):
            builds.add_metric([outcome], count)
        yield builds
        if self.platform.quality is not None:
            yield from self.platform.quality.snapshot.families()
            yield CounterMetricFamily("agentwharf_scoring_process_restarts", "Restarts of the online scoring process "
                                      "after it exited.", value=self.platform.scoring.restarts)

    def _spool(self):
        yield from spool_families(self.platform.recorder, self.platform.writer)

    def _workers(self):
        states = GaugeMetricFamily("agentwharf_served_versions", "Served model versions by state.", labels=["state"])
        restarts = CounterMetricFamily("agentwharf_worker_restarts", "Restarts of worker processes after they exited.",
                                       labels=list(_ENTITY))
        memory = GaugeMetricFamily("agentwharf_worker_resident_memory_bytes", "Resident memory of each worker process.",
                                   labels=[*_ENTITY, "replica"])
        counts: dict[str, int] = {}
        for key, version in self.platform.supervisor.versions.items():
            counts[version.state] = counts.get(version.state, 0) + 1
            endpoint, _, entity = key.partition("/")
            restarts.add_metric([endpoint, entity], sum(r.restarts for r in version.replicas))
            for replica in version.replicas:
                if replica.process is not None and replica.process.returncode is None:
                    if (rss := resident_bytes(replica.process.pid)) is not None:
                        memory.add_metric([endpoint, entity, str(replica.index)], rss)
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield from (states, restarts, memory)


class SpoolCollector:
    """A gateway process's state at scrape time: its spool and its writer."""

    def __init__(self, recorder, writer):
        self.recorder, self.writer = recorder, writer

    def describe(self):
        return []

    def collect(self):
        yield from spool_families(self.recorder, self.writer)


def spool_families(recorder, writer):
    """The spool's and its writer's metrics (the platform's, or a gateway process's)."""
    appender = recorder.appender
    yield GaugeMetricFamily("agentwharf_spool_pending_bytes", "Bytes spooled but not yet written to the store.",
                            value=recorder.pending_estimate())
    yield GaugeMetricFamily("agentwharf_spool_writer_lag_seconds", "Age of the oldest spooled record not yet stored.",
                            value=round(recorder.lag_seconds, 3))
    yield CounterMetricFamily("agentwharf_spool_records", "Request records made durable in the spool.",
                              value=appender.appended_records)
    yield CounterMetricFamily("agentwharf_spool_fsyncs", "fsync calls of the spool (group commits).", value=appender.fsyncs)
    yield CounterMetricFamily("agentwharf_spool_rejected", "Requests refused because the spool was full or the disk "
                              "nearly so.", value=recorder.rejected)
    yield CounterMetricFamily("agentwharf_writer_restarts", "Restarts of the spool writer process.",
                              value=writer.restarts)
    if recorder.free_bytes is not None:
        yield GaugeMetricFamily("agentwharf_home_free_bytes", "Bytes free on the disk under the home.",
                                value=recorder.free_bytes)


def resident_bytes(pid: int) -> int | None:
    """A process's resident memory, from ``/proc`` (None if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
