"""The MLflow calls the pages make, over MLflow's own REST and with MLflow's own entities
(``Trace``, ``Feedback``, ``Expectation``, ``LabelSchema``, ``ReviewQueue``), always *as the
signed-in caller* unless a docstring says otherwise, so MLflow's permissions decide.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict, ParseDict
from mlflow.entities import Assessment, Trace
from mlflow.genai.label_schemas import LabelSchema
from mlflow.genai.review_queues import ReviewQueue, ReviewQueueItem
from mlflow.protos import label_schemas_pb2, review_queues_pb2, service_pb2

from agentwharf.auth.caller import Caller
from agentwharf.databricks_compat.mlflow_calls import MlflowCalls

_TRACES = "/api/3.0/mlflow/traces"
_QUEUES = "/api/3.0/mlflow/review-queues"
_SCHEMAS = "/api/3.0/mlflow/label-schemas"


def _parse(message_class, data: dict) -> Any:
    return ParseDict(data, message_class(), ignore_unknown_fields=True)


async def get_trace(mlflow: MlflowCalls, caller: Caller | None, trace_id: str) -> Trace:
    """The whole trace, spans and assessments included."""
    data = await mlflow.json(caller, "GET", f"{_TRACES}/get", params={"trace_id": trace_id})
    return Trace.from_proto(_parse(service_pb2.GetTrace.Response, data).trace)


async def trace_metadata(mlflow: MlflowCalls, caller: Caller | None, trace_id: str) -> dict[str, str]:
    data = await mlflow.json(caller, "GET", f"{_TRACES}/{trace_id}")
    return dict(data.get("trace", {}).get("trace_info", {}).get("trace_metadata", {}))


async def log_assessment(mlflow: MlflowCalls, caller: Caller | None, assessment: Assessment) -> dict:
    """What ``mlflow.log_feedback``/``log_expectation`` send (they build the same entity)."""
    body = {"assessment": MessageToDict(assessment.to_proto(), preserving_proto_field_name=True)}
    return await mlflow.json(caller, "POST", f"{_TRACES}/{assessment.trace_id}/assessments", json=body)


async def get_queue(mlflow: MlflowCalls, caller: Caller, queue_id: str) -> ReviewQueue:
    data = await mlflow.json(caller, "GET", f"{_QUEUES}/get", params={"queue_id": queue_id})
    return ReviewQueue.from_proto(_parse(review_queues_pb2.GetReviewQueue.Response, data).review_queue)


async def list_queues(mlflow: MlflowCalls, caller: Caller, experiment_id: str, user: str) -> list[ReviewQueue]:
    queues, token = [], None
    while True:
        params = {"experiment_id": experiment_id, "user": user, "max_results": 100, **({"page_token": token} if token else {})}
        data = await mlflow.json(caller, "GET", f"{_QUEUES}/list", params=params)
        response = _parse(review_queues_pb2.ListReviewQueues.Response, data)
        queues += [ReviewQueue.from_proto(q) for q in response.review_queues]
        token = response.next_page_token
        if not token:
            return queues


async def queue_items(mlflow: MlflowCalls, caller: Caller, queue_id: str) -> list[ReviewQueueItem]:
    items, token = [], None
    while True:
        params = {"queue_id": queue_id, "max_results": 100, **({"page_token": token} if token else {})}
        data = await mlflow.json(caller, "GET", f"{_QUEUES}/items/list", params=params)
        response = _parse(review_queues_pb2.ListReviewQueueItems.Response, data)
        items += [ReviewQueueItem.from_proto(i) for i in response.items]
        token = response.next_page_token
        if not token:
            # MLflow lists newest-attached first; a reviewer works through them in the order added.
            return sorted(items, key=lambda i: (i.creation_time_ms, i.item_id))


async def set_item_status(mlflow: MlflowCalls, caller: Caller, queue_id: str, item_id: str, status: str) -> None:
    body = {"queue_id": queue_id, "item_id": item_id, "status": status.upper()}
    if status != "pending":
        body["completed_by"] = caller.name
    await mlflow.json(caller, "POST", f"{_QUEUES}/items/set-status", json=body)


async def get_schema(mlflow: MlflowCalls, caller: Caller, schema_id: str) -> LabelSchema:
    data = await mlflow.json(caller, "GET", f"{_SCHEMAS}/get", params={"schema_id": schema_id})
    return LabelSchema.from_proto(_parse(label_schemas_pb2.GetLabelSchema.Response, data).label_schema)


async def search_experiments(mlflow: MlflowCalls, caller: Caller, filter_string: str) -> list[dict]:
    data = await mlflow.json(caller, "POST", "/api/2.0/mlflow/experiments/search",
                             json={"filter": filter_string, "max_results": 1000})
    return data.get("experiments", [])
