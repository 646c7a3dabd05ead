"""Per-endpoint request metrics for ``GET /api/2.0/serving-endpoints/{name}/metrics``
(``WorkspaceClient().serving_endpoints.export_metrics``), in Prometheus text.

Databricks' export serves, per endpoint, gauges over the last minute (``request_count_total``,
``request_4xx_count_total``, ``request_5xx_count_total``), a ``request_latency_ms`` histogram
and ``provisioned_concurrent_requests_total``; dashboards built on it read those names, so they
are kept, with their meaning. agentwharf adds what it knows beyond them: requests in flight
now and counts by status since the platform started. CPU and memory gauges are not served.

Kept apart from the platform-wide ``/metrics`` (``platform.metrics``, which feeds it): this is a
sliding window with Databricks' names, that one cumulative counters and histograms; the cost
on the request path is one bucket update per answered request.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

#: Databricks' latency buckets, in milliseconds.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000, 600000)
WINDOW_SECONDS = 60


@dataclass
class _Second:
    """What was answered during one wall-clock second."""

    second: int
    count: int = 0
    client_errors: int = 0
    server_errors: int = 0
    latency_sum: float = 0.0
    #: Per bucket, not cumulative; the last counts what is above every bound.
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))


class EndpointMetrics:
    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._recent: dict[str, deque[_Second]] = {}
        self._by_status: dict[str, Counter[int]] = {}

    def observe(self, endpoint: str, status: int, latency: float) -> None:
        """One answered request: its endpoint, HTTP status and latency in milliseconds."""
        now = int(self.clock())
        window = self._recent.setdefault(endpoint, deque())
        if not window or window[-1].second != now:
            window.append(_Second(now))
            while window[0].second <= now - WINDOW_SECONDS:
                window.popleft()
        second = window[-1]
        second.count += 1
        second.client_errors += 400 <= status < 500
        second.server_errors += status >= 500
        second.latency_sum += latency
        second.buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, latency)] += 1
        self._by_status.setdefault(endpoint, Counter())[status] += 1

    def render(self, endpoint: str, *, in_flight: int, concurrency: int) -> str:
        """The endpoint's metrics: the last minute's requests, what it can take at once
        (``concurrency``: worker processes times threads), what it is answering now."""
        cutoff = int(self.clock()) - WINDOW_SECONDS
        seconds = [s for s in self._recent.get(endpoint, ()) if s.second > cutoff]
        label = f'endpoint_name="{_escape(endpoint)}"'
        out: list[str] = []

        def family(name: str, kind: str, help_text: str, lines: list[str]) -> None:
            out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines])

        for name, what, value in (
            ("request_count_total", "Requests answered in the last minute.", sum(s.count for s in seconds)),
            ("request_4xx_count_total", "4xx answers in the last minute.", sum(s.client_errors for s in seconds)),
            ("request_5xx_count_total", "5xx answers in the last minute.", sum(s.server_errors for s in seconds)),
        ):
            family(name, "gauge", what, [f"{name}{{{label}}} {value}"])
        family("request_latency_ms", "histogram", "Latency of the last minute's requests, in milliseconds.",
               _histogram(label, seconds))
        family("provisioned_concurrent_requests_total", "gauge",
               "Requests the endpoint's ready workers can answer at once (processes x threads).",
               [f"provisioned_concurrent_requests_total{{{label}}} {concurrency}"])
        family("agentwharf_endpoint_requests_in_flight", "gauge", "Requests being answered now.",
               [f"agentwharf_endpoint_requests_in_flight{{{label}}} {in_flight}"])
        by_status = sorted(self._by_status.get(endpoint, Counter()).items())
        family("agentwharf_endpoint_requests", "counter", "Requests answered since the platform started, by status.",
               [f'agentwharf_endpoint_requests_total{{{label},status_code="{status}"}} {count}' for status, count in by_status])
        return "\n".join(out) + "\n"


def _histogram(label: str, seconds: list[_Second]) -> list[str]:
    lines, running = [], 0
    for i, bound in enumerate((*LATENCY_BUCKETS_MS, "+Inf")):
        running += sum(s.buckets[i] for s in seconds)
        lines.append(f'request_latency_ms_bucket{{{label},le="{bound}"}} {running}')
    lines.append(f"request_latency_ms_sum{{{label}}} {round(sum(s.latency_sum for s in seconds), 3)}")
    lines.append(f"request_latency_ms_count{{{label}}} {running}")
    return lines


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
