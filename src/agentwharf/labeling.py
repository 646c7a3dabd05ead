"""MLflow's labeling sessions (``mlflow.genai.labeling``) against an agentwharf platform.

MLflow looks labeling backends up by the tracking URI's scheme in its ``mlflow.labeling_store``
entry point group; agentwharf registers this store for ``http`` and ``https`` (pyproject.toml),
so with ``MLFLOW_TRACKING_URI`` set to the platform the guide's code runs unchanged:

    session = mlflow.genai.labeling.create_labeling_session("review", assigned_users=["alice"],
                                                            label_schemas=["expected_facts", "quality"])
    session.add_traces(mlflow.search_traces(...))
    ...reviewers label in the review app (session.url)...
    session.sync(to_dataset="support_golden")

A session is built from MLflow's own parts, through its REST API (at the platform, with the
caller's ``MLFLOW_TRACKING_TOKEN``, so MLflow's permissions apply):

    labeling session        an MLflow run (``mlflow_run_id``) tagged with its settings, and a
                            custom review queue (``labeling_session_id``) holding the rest
    assigned_users          the queue's users, each given EDIT on the experiment (to label)
    label_schemas (names)   the experiment's label schemas; Databricks' built-in
                            ``expected_facts``, ``guidelines`` and ``expected_response`` are
                            created on first use (text; facts and guidelines one per line)
    add_traces              the traces become the queue's items
    labels                  MLflow assessments on the traces, with the reviewer as source
    sync(to_dataset)        the items' traces, expectations included, merged into the MLflow
                            evaluation dataset of that name (created in the session's
                            experiment if there is none)

MLflow's review queues are also in MLflow's own UI, so a session shows there too.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from mlflow.entities import Trace
from mlflow.exceptions import MlflowException
from mlflow.genai.label_schemas import (
    EXPECTED_FACTS,
    EXPECTED_RESPONSE,
    GUIDELINES,
    InputText,
    LabelSchema,
)
from mlflow.genai.labeling.labeling import LabelingSession
from mlflow.genai.labeling.stores import AbstractLabelingStore
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST

#: Run tags that make a run a labeling session, and carry what the queue does not.
SESSION_TAG = "agentwharf.labeling_session"
QUEUE_TAG = "agentwharf.labeling_session.queue_id"
AGENT_TAG = "agentwharf.labeling_session.agent"
MULTI_TURN_TAG = "agentwharf.labeling_session.multi_turn"
CUSTOM_INPUTS_TAG = "agentwharf.labeling_session.custom_inputs"
#: Experiment tag the review app looks for to find sessions outside endpoints' experiments.
EXPERIMENT_TAG = "agentwharf.labeling_sessions"
#: Databricks' built-in label schemas: (type, instruction).
BUILT_IN = {
    EXPECTED_FACTS: ("expectation", "The facts a correct answer must contain, one per line."),
    GUIDELINES: ("expectation", "Guidelines a good answer must follow, one per line."),
    EXPECTED_RESPONSE: ("expectation", "The answer you expect."),
}


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


class AgentwharfLabelingStore(AbstractLabelingStore):
    """Labeling sessions as MLflow runs and review queues on the platform (see the module)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.tracking_uri = (tracking_uri or "").rstrip("/")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)

    # -- helpers ----------------------------------------------------------------------------

    @property
    def _tracing(self):
        return self.client._tracing_client

    @staticmethod
    def _experiment(experiment_id: str | None) -> str:
        if experiment_id is not None:
            return experiment_id
        from mlflow.tracking.fluent import _get_experiment_id

        return _get_experiment_id()

    def _url(self, queue_id: str) -> str:
        return f"{self.tracking_uri}/ml/review-v2/sessions/{queue_id}"

    def _session(self, run) -> LabelingSession:
        tags = run.data.tags
        queue_id = tags.get(QUEUE_TAG)
        if not queue_id:
            raise MlflowException(f"Run {run.info.run_id} is not a labeling session", error_code=RESOURCE_DOES_NOT_EXIST)
        queue = self._tracing._get_review_queue(queue_id)
        names = [self._tracing._get_label_schema(schema_id).name for schema_id in queue.schema_ids]
        custom = tags.get(CUSTOM_INPUTS_TAG)
        return LabelingSession(
            name=queue.name, assigned_users=list(queue.users), agent=tags.get(AGENT_TAG) or None, label_schemas=names,
            labeling_session_id=queue_id, mlflow_run_id=run.info.run_id, review_app_id=run.info.experiment_id,
            experiment_id=run.info.experiment_id, url=self._url(queue_id),
            enable_multi_turn_chat=tags.get(MULTI_TURN_TAG) == "true", custom_inputs=json.loads(custom) if custom else None)

    def _schema_ids(self, experiment_id: str, names: list[str]) -> list[str]:
        ids = []
        for name in names:
            try:
                schema = self._tracing._get_label_schema_by_name(experiment_id, name)
            except MlflowException as error:
                if error.error_code != "RESOURCE_DOES_NOT_EXIST" or name not in BUILT_IN:
                    raise _invalid(f"Label schema {name!r} does not exist in experiment {experiment_id}; create it with "
                                   "mlflow.genai.label_schemas.create_label_schema first") from error
                kind, instruction = BUILT_IN[name]
                schema = self._tracing._create_label_schema(experiment_id=experiment_id, name=name, type=kind,
                                                            input=InputText(), instruction=instruction, enable_comment=False)
            ids.append(schema.schema_id)
        return ids

    def _grant_labelers(self, experiment_id: str, users: list[str]) -> None:
        """Assigned users label by writing assessments and completing items: EDIT on the
        experiment. Given by the session's creator (who must manage the experiment); a user
        who already has EDIT or more keeps it."""
        from mlflow.server.auth.client import AuthServiceClient

        auth = AuthServiceClient(self.tracking_uri)
        for user in users:
            try:
                current = auth.get_user_permission(user, "experiment", experiment_id).permission
            except MlflowException:
                current = None
            try:
                if current not in ("EDIT", "MANAGE"):
                    auth.grant_user_permission(user, "experiment", experiment_id, "EDIT")
            except MlflowException as error:
                warnings.warn(f"Could not give {user!r} EDIT on experiment {experiment_id} ({error.message}); "
                              "they need it to label this session's items", stacklevel=3)

    # -- sessions -----------------------------------------------------------------------------

    def create_labeling_session(self, name: str, *, assigned_users: list[str] | None = None, agent: str | None = None,
                                label_schemas: list[str] | None = None, enable_multi_turn_chat: bool = False,
                                custom_inputs: dict[str, Any] | None = None,
                                experiment_id: str | None = None) -> LabelingSession:
        experiment_id = self._experiment(experiment_id)
        users = [u.strip().lower() for u in assigned_users or []]
        schema_ids = self._schema_ids(experiment_id, list(label_schemas or []))
        queue = self._tracing._create_review_queue(experiment_id, name=name, queue_type="custom", users=users,
                                                   schema_ids=schema_ids)
        tags = {SESSION_TAG: "true", QUEUE_TAG: queue.queue_id, MULTI_TURN_TAG: str(bool(enable_multi_turn_chat)).lower()}
        if agent:
            tags[AGENT_TAG] = agent
        if custom_inputs:
            tags[CUSTOM_INPUTS_TAG] = json.dumps(custom_inputs)
        run = self.client.create_run(experiment_id, run_name=name, tags=tags)
        self.client.set_experiment_tag(experiment_id, EXPERIMENT_TAG, "true")
        self._grant_labelers(experiment_id, users)
        return self._session(self.client.get_run(run.info.run_id))

    def get_labeling_session(self, run_id: str) -> LabelingSession:
        return self._session(self.client.get_run(run_id))

    def get_labeling_sessions(self, experiment_id: str | None = None) -> list[LabelingSession]:
        runs = self.client.search_runs([self._experiment(experiment_id)], filter_string=f"tags.`{SESSION_TAG}` = 'true'",
                                       max_results=1000)
        sessions = []
        for run in runs:
            try:
                sessions.append(self._session(run))
            except MlflowException:
                continue  # its queue was deleted from MLflow's UI: no longer a session
        return sessions

    def delete_labeling_session(self, labeling_session: LabelingSession) -> None:
        self._tracing._delete_review_queue(labeling_session.labeling_session_id)
        self.client.delete_run(labeling_session.mlflow_run_id)

    def set_session_assigned_users(self, labeling_session: LabelingSession, assigned_users: list[str]) -> LabelingSession:
        users = [u.strip().lower() for u in assigned_users]
        self._tracing._update_review_queue(labeling_session.labeling_session_id, users=users)
        self._grant_labelers(labeling_session.experiment_id, users)
        return self.get_labeling_session(labeling_session.mlflow_run_id)

    # -- items ----------------------------------------------------------------------------------

    def add_traces_to_session(self, labeling_session: LabelingSession, traces: list[Trace]) -> LabelingSession:
        ids = [trace.info.trace_id for trace in traces]
        if ids:
            self._tracing._add_items_to_review_queue(labeling_session.labeling_session_id, item_ids=ids)
        return self.get_labeling_session(labeling_session.mlflow_run_id)

    def add_dataset_to_session(self, labeling_session: LabelingSession, dataset_name: str,
                               record_ids: list[str] | None = None) -> LabelingSession:
        """Records made from traces are added as those traces; others have no trace to label."""
        from mlflow.genai.datasets import get_dataset

        records = get_dataset(name=dataset_name).to_df()
        if record_ids is not None and "dataset_record_id" in records.columns:
            records = records[records["dataset_record_id"].isin(record_ids)]
        ids = [tid for tid in (_source_trace_id(s) for s in records.get("source", [])) if tid]
        if not ids:
            raise _invalid(f"No record of dataset {dataset_name!r} was made from a trace; add traces with add_traces")
        self._tracing._add_items_to_review_queue(labeling_session.labeling_session_id, item_ids=ids)
        return self.get_labeling_session(labeling_session.mlflow_run_id)

    def _item_traces(self, labeling_session: LabelingSession) -> list[Trace]:
        items, token = [], None
        while True:
            page = self._tracing._list_review_queue_items(labeling_session.labeling_session_id, max_results=100,
                                                          page_token=token)
            items += list(page)
            token = page.token
            if not token:
                break
        return [self.client.get_trace(item.item_id) for item in items]

    def sync_session_expectations(self, labeling_session: LabelingSession, dataset: str) -> None:
        from mlflow.genai.datasets import create_dataset, get_dataset

        traces = self._item_traces(labeling_session)
        if not traces:
            return
        try:
            target = get_dataset(name=dataset)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            target = create_dataset(name=dataset, experiment_id=labeling_session.experiment_id)
        target.merge_records(traces)

    # -- label schemas (MLflow routes these to its tracking store on non-Databricks URIs) ----

    def get_label_schema(self, name: str) -> LabelSchema:
        return self._tracing._get_label_schema_by_name(self._experiment(None), name)

    def create_label_schema(self, name: str, *, type: str, title: str, input: Any, instruction: str | None = None,
                            enable_comment: bool = False, overwrite: bool = False) -> LabelSchema:
        return self._tracing._create_label_schema(experiment_id=self._experiment(None), name=name, type=type, input=input,
                                                  instruction=instruction, enable_comment=enable_comment)

    def delete_label_schema(self, name: str) -> None:
        self._tracing._delete_label_schema(self.get_label_schema(name).schema_id)


def _source_trace_id(source: Any) -> str | None:
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except ValueError:
            return None
    if isinstance(source, dict):
        return (source.get("source_data") or {}).get("trace_id")
    data = getattr(source, "source_data", None)
    return data.get("trace_id") if isinstance(data, dict) else None
