"""Worker side: catch the traces the agent's spans make, in memory, per request.

MLflow's span processor keeps doing its bookkeeping (trace ids, span registry, the output
reducer for streams), but its exporter, which would queue each trace for an HTTP upload and
drop it when the queue is full, is replaced by one that hands the finished trace to the thread
that ran ``predict``. The store write then happens once, in the platform's writer, in batches.

The traces are collected per context (a ``ContextVar``), not per thread: a synchronous
``predict`` runs in a pool thread (its own context), an async agent in the request's own task on
the worker's event loop, and many such tasks share the loop's one thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("agentwharf.capture")

#: The list the current request's finished traces go to; None outside a request.
_slot: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("agentwharf_captured_traces", default=None)


def _exporter_class():
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from mlflow.tracing.trace_manager import InMemoryTraceManager

    class CaptureExporter(SpanExporter):
        """Pops each finished trace and parks it for the request whose root span ended."""

        def export(self, spans):
            manager = InMemoryTraceManager.get_instance()
            for span in spans:
                if span.parent is not None:
                    continue
                finished = manager.pop_trace(span.context.trace_id)
                captured = _slot.get()
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
    _time_ordered_trace_ids(provider.provider.get())
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


def _time_ordered_trace_ids(tracer_provider: Any) -> None:
    """New traces get time-ordered ids (``tracing.ids``: cheaper to index in the store).

    Set here, on the provider MLflow made, because nothing else reaches it: MLflow builds its
    ``TracerProvider`` without an id generator, and OpenTelemetry's ``OTEL_PYTHON_ID_GENERATOR``
    is read only by its auto-instrumentation, not by ``TracerProvider`` (nor could an entry point
    be found in a model's environment, which has agentwharf on ``PYTHONPATH`` without its
    package metadata). A tracer copies the generator when made, so the ones already made are
    updated too."""
    from agentwharf.tracing.ids import id_generator

    if not hasattr(tracer_provider, "id_generator"):
        log.info("MLflow's tracer provider (%s) takes no id generator; trace ids stay random",
                 type(tracer_provider).__name__)
        return
    generator = tracer_provider.id_generator = id_generator()
    for tracer in list(getattr(tracer_provider, "_tracers", {}).values()):
        if hasattr(tracer, "id_generator"):
            tracer.id_generator = generator


def begin() -> list[Any]:
    """Start collecting traces finished in this context (thread or task); the list they go to."""
    traces: list[Any] = []
    _slot.set(traces)
    return traces


def take() -> list[Any]:
    """The MLflow ``Trace`` objects finished in this context since ``begin()``."""
    traces = _slot.get() or []
    _slot.set(None)
    return traces


@contextlib.contextmanager
def collecting(traces: list[Any]) -> Iterator[None]:
    """Traces finished inside go to ``traces``: a request's step run in another context (an
    async generator advanced from a pool thread, one loop task per step)."""
    token = _slot.set(traces)
    try:
        yield
    finally:
        _slot.reset(token)
