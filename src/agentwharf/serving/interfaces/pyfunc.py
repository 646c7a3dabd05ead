"""Any other pyfunc model: MLflow's scoring protocol, exactly as ``mlflow models serve`` takes it.

A JSON object with one of ``dataframe_split``, ``dataframe_records``, ``instances`` or
``inputs`` (and optional ``params``) is parsed by the scoring server's own
``_parse_json_data`` and answered ``{"predictions": ...}``; a body in MLflow's unified LLM
shape (``messages``, ``prompt`` or ``input`` at the top) goes to the model as it is and is
answered unwrapped, as MLflow does. The model's signature is enforced by
``PyFuncModel.predict``; an input it refuses is a 400 that shows the signature.

Unlike ``mlflow models serve``, which answers 400 for anything the model raises, a model's own
exception is a 500 ``MODEL_ERROR`` here, as for every other interface.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from agentwharf.serving.interfaces.base import INVOCATIONS, NATIVE, SCORING_LOOK, ModelInterface

#: Longest part of MLflow's own message that a 400 repeats (its schema errors quote the data).
_DETAIL_CHARS = 2000


@dataclass(slots=True)
class ScoringRequest:
    data: Any
    params: dict[str, Any] | None
    #: MLflow's unified LLM input: answered without the ``predictions`` wrapper.
    unwrapped: bool
    body: dict[str, Any]


class PyfuncInterface(ModelInterface):
    kind = "pyfunc"
    label = "pyfunc model"
    look = SCORING_LOOK
    dialects = {INVOCATIONS: NATIVE}

    def __init__(self, pyfunc_model: Any):
        self.model = pyfunc_model
        self.streams = getattr(pyfunc_model, "_predict_stream_fn", None) is not None
        metadata = pyfunc_model.metadata
        self.input_schema = metadata.get_input_schema()
        self.params_schema = metadata.get_params_schema()
        inputs = f" holding the inputs of its signature, {self.input_schema}," if self.input_schema is not None else ""
        params = f" ({self.params_schema})" if self.params_schema is not None else ""
        self.shape = ("MLflow's scoring protocol: a JSON object with one of \"dataframe_split\", \"dataframe_records\", "
                      f"\"instances\" or \"inputs\"{inputs} and optionally \"params\"{params}")

    def elsewhere(self, seen: str) -> str:
        return ", which this model's signature does not take (ResponsesAgent, ChatAgent and ChatModel endpoints do)"

    def invalid(self, detail: str, body: dict[str, Any]):
        from mlflow.pyfunc.scoring_server import SCORING_PROTOCOL_CHANGE_INFO

        # MLflow adds advice about its 1.x protocol (downgrade MLflow) that does not apply here.
        detail = detail.replace(SCORING_PROTOCOL_CHANGE_INFO, "").strip()
        if len(detail) > _DETAIL_CHARS:
            detail = f"{detail[:_DETAIL_CHARS]}..."
        return super().invalid(detail.rstrip(". \n"), body)

    def validate(self, body: dict[str, Any]) -> ScoringRequest:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import _parse_json_data

        try:
            # A copy: MLflow pops "params" from the dict it is given.
            parsed = _parse_json_data(dict(body), self.model.metadata, self.input_schema)
        except MlflowException as error:
            raise self.invalid(error.message, body) from None
        return ScoringRequest(parsed.data, parsed.params, parsed.is_unified_llm_input, body)

    def parse(self, body: dict[str, Any], route: str = INVOCATIONS):
        call = super().parse(body, route)
        if call.stream:
            # predict_stream checks its input only once iterated, after the stream's 200 went
            # out; check it now so a bad one is still a 400.
            self._enforce(call.request)
        return call

    def _enforce(self, request: ScoringRequest) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc import _validate_prediction_input

        try:
            _validate_prediction_input(request.data, request.params, self.input_schema, self.params_schema,
                                       self.model.loader_module)
        except MlflowException as error:
            raise self.invalid(error.message, request.body) from None

    def predict(self, request: ScoringRequest) -> Any:
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import predictions_to_json, unwrapped_predictions_to_json

        try:
            raw = self.model.predict(request.data, params=request.params)
        except MlflowException as error:
            # Schema enforcement (before the model runs) and a model's own "invalid parameter"
            # are the caller's to fix, as `mlflow models serve` answers them.
            if 400 <= error.get_http_status_code() < 500:
                raise self.invalid(error.message, request.body) from None
            raise
        # MLflow's own encoder (NumPy and pandas values included), read back as plain values;
        # json, not orjson, reads the NaN it may write.
        out = io.StringIO()
        (unwrapped_predictions_to_json if request.unwrapped else predictions_to_json)(raw, out)
        return json.loads(out.getvalue())

    def predict_stream(self, request: ScoringRequest) -> Iterator[Any]:
        from mlflow.utils.proto_json_utils import _get_jsonable_obj

        for chunk in self.model.predict_stream(request.data, params=request.params):
            yield _get_jsonable_obj(chunk)
