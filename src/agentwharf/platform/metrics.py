"""``GET /metrics`` in the Prometheus text format."""

from __future__ import annotations


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        inner = ",".join(f'{k}="{str(v).replace(chr(34), "")}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value}"
    return f"{name} {value}"


def render(platform) -> str:
    recorder = platform.recorder
    appender = recorder.appender
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[float, dict | None]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(_line(name, v, labels) for v, labels in samples)

    metric("agentwharf_spool_pending_bytes", "gauge", "Bytes spooled but not yet written to the store.",
           [(recorder.pending_estimate(), None)])
    metric("agentwharf_spool_writer_lag_seconds", "gauge", "Age of the oldest spooled record not yet stored.",
           [(round(recorder.lag_seconds, 3), None)])
    metric("agentwharf_spool_records_total", "counter", "Request records made durable in the spool.",
           [(appender.appended_records, None)])
    metric("agentwharf_spool_fsyncs_total", "counter", "fsync calls of the spool (group commits).",
           [(appender.fsyncs, None)])
    metric("agentwharf_spool_rejected_total", "counter", "Requests refused with 503 because the spool was full.",
           [(recorder.rejected, None)])
    metric("agentwharf_writer_restarts_total", "counter", "Restarts of the spool writer process.",
           [(platform.writer.restarts, None)])
    metric("agentwharf_requests_total", "counter", "Requests served by the gateway, by endpoint and status.",
           [(count, {"endpoint": ep, "status": str(status)}) for (ep, status), count in sorted(recorder.requests.items())])
    states: dict[str, int] = {}
    for version in platform.supervisor.versions.values():
        states[version.state] = states.get(version.state, 0) + 1
    metric("agentwharf_served_versions", "gauge", "Served model versions by state.",
           [(n, {"state": s}) for s, n in sorted(states.items())])
    return "\n".join(out) + "\n"
