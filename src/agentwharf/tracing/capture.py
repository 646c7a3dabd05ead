"""Worker side: catch the traces the agent's spans make, in memory, per request.

MLflow's span processor keeps doing its bookkeeping (trace ids, span registry, the output
reducer for streams), but its exporter, which would queue each trace for an HTTP upload and
drop it when the queue is full, is replaced by one that hands the finished trace to the thread
that ran ``predict``. The store write then happens once, in the platform's writer, in batches.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("agentwharf.capture")

_slot = threading.local()


def _exporter_class():
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from mlflow.tracing.trace_manager import InMemoryTraceManager

    class CaptureExporter(SpanExporter):
        """Pops each finished trace and parks it for the thread whose root span ended."""

        def export(self, spans):
            manager = InMemoryTraceManager.get_instance()
            for span in spans:
                if span.parent is not None:
                    continue
                finished = manager.pop_trace(span.context.trace_id)
                captured = getattr(_slot, "traces", None)
                if finished is not None and captured is not None:
                    captured.append(finished.trace)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            return None

    return CaptureExporter


def pin_experiment() -> None:
    """Without an active experiment MLflow resolves MLFLOW_EXPERIMENT_ID for every new trace
    with a get_experiment call to the tracking server: one HTTP round trip per request.
    Resolve it once, at load time, instead."""
    import mlflow
    from mlflow.environment_variables import MLFLOW_EXPERIMENT_ID

    if experiment_id := MLFLOW_EXPERIMENT_ID.get():
        mlflow.set_experiment(experiment_id=experiment_id)


def install() -> bool:
    """Route MLflow's finished traces to ``take()``. Returns False if tracing is off."""
    import mlflow.tracing.provider as provider

    provider._get_tracer(__name__)  # initialise MLflow's tracer provider now, not on the first request
    processor = provider._get_span_processor()
    if processor is None or not hasattr(processor, "span_exporter"):
        log.info("MLflow tracing is disabled; requests get a root span only")
        return False
    processor.span_exporter = _exporter_class()()
    # MLflow may hand spans to an OTel batch processor holding the old exporter; export
    # synchronously instead, so the trace is ready when predict returns.
    if getattr(processor, "_batch_delegate", None) is not None:
        processor._batch_delegate = None
    return True


def begin() -> None:
    """Start collecting traces finished on this thread."""
    _slot.traces = []


def take() -> list[Any]:
    """The MLflow ``Trace`` objects finished on this thread since ``begin()``."""
    traces = getattr(_slot, "traces", None) or []
    _slot.traces = None
    return traces
