"""agentwharf.serving.endpoint_metrics: one endpoint's metrics in Prometheus text, with
Databricks' names and meaning (the last minute's requests, a latency histogram)."""

import re

from agentwharf.serving.endpoint_metrics import EndpointMetrics

_SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Parse Prometheus text strictly enough to catch a malformed line: every sample belongs to
    a family announced by HELP and TYPE."""
    found, families = {}, set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            families.add(line.split()[2])
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, line
        name, labels, value = match.groups()
        assert name in families or re.sub(r"_(bucket|sum|count|total)$", "", name) in families, name
        pairs = tuple(sorted((k, v.replace('\\"', '"')) for k, v in _LABEL.findall(labels or "")))
        found[(name, pairs)] = float(value)
    return found


def observe(metrics, endpoint, status, latency):
    metrics.observe(endpoint, status, latency)


def test_counts_latency_and_status_for_one_endpoint_only():
    clock = Clock()
    metrics = EndpointMetrics(clock)
    for status, latency in ((200, 3.0), (200, 40.0), (404, 1.0), (500, 700.0), (503, 5.0)):
        observe(metrics, "chat", status, latency)
    observe(metrics, "other", 200, 1.0)
    found = samples(metrics.render("chat", in_flight=2, concurrency=16))
    ep = (("endpoint_name", "chat"),)
    assert found[("request_count_total", ep)] == 5
    assert found[("request_4xx_count_total", ep)] == 1
    assert found[("request_5xx_count_total", ep)] == 2
    assert found[("request_latency_ms_bucket", ep + (("le", "5"),))] == 3   # 3, 1 and 5 ms (le is inclusive)
    assert found[("request_latency_ms_bucket", ep + (("le", "50"),))] == 4
    assert found[("request_latency_ms_bucket", ep + (("le", "1000"),))] == 5
    assert found[("request_latency_ms_bucket", ep + (("le", "+Inf"),))] == 5
    assert found[("request_latency_ms_count", ep)] == 5
    assert found[("request_latency_ms_sum", ep)] == 749.0
    assert found[("provisioned_concurrent_requests_total", ep)] == 16
    assert found[("agentwharf_endpoint_requests_in_flight", ep)] == 2
    assert found[("agentwharf_endpoint_requests_total", ep + (("status_code", "200"),))] == 2
    assert not any(labels == (("endpoint_name", "other"),) for _, labels in found)


def test_the_window_is_the_last_minute_but_totals_stay():
    clock = Clock()
    metrics = EndpointMetrics(clock)
    observe(metrics, "chat", 200, 1.0)
    clock.now += 30
    observe(metrics, "chat", 500, 1.0)
    ep = (("endpoint_name", "chat"),)
    assert samples(metrics.render("chat", in_flight=0, concurrency=0))[("request_count_total", ep)] == 2
    clock.now += 31  # the first request is now older than a minute
    found = samples(metrics.render("chat", in_flight=0, concurrency=0))
    assert found[("request_count_total", ep)] == 1 and found[("request_5xx_count_total", ep)] == 1
    clock.now += 60
    found = samples(metrics.render("chat", in_flight=0, concurrency=0))
    assert found[("request_count_total", ep)] == 0
    assert found[("agentwharf_endpoint_requests_total", ep + (("status_code", "200"),))] == 1


def test_an_endpoint_without_requests_still_answers_and_names_are_escaped():
    metrics = EndpointMetrics(Clock())
    text = metrics.render('we"ird', in_flight=0, concurrency=4)
    found = samples(text)
    assert found[("request_count_total", (("endpoint_name", 'we"ird'),))] == 0
    assert "# TYPE request_latency_ms histogram" in text


def test_memory_stays_bounded_to_the_window():
    clock = Clock()
    metrics = EndpointMetrics(clock)
    for _ in range(500):
        clock.now += 1
        observe(metrics, "chat", 200, 1.0)
    assert len(metrics._recent["chat"]) == 60
