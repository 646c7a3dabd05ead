"""How a worker calls the user's model: one ``predict`` and one ``predict_stream`` over dicts.

For a ``ResponsesAgent`` the adapter does what MLflow's own pyfunc wrapper does (build a
``ResponsesAgentRequest``, call the agent, dump with ``exclude_none``) but skips
``PyFuncModel.predict``'s generic input handling, which costs ~10x the agent itself
(see shared/reference/performance-facts.md). Any other pyfunc model goes through
``PyFuncModel.predict`` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pydantic


class InvalidRequest(Exception):
    """The request body does not fit the model's schema; the message names the field."""


#: Labels pydantic puts in an error's path for the members of a union, not field names.
_UNION_LABELS = {"str", "int", "float", "bool", "bytes", "none", "dict", "list"}


def _is_field(part: object) -> bool:
    # The Responses schema's fields are snake_case; union members show up as validator
    # labels ("function-after[...]"), type names ("str") or class names ("Message").
    if isinstance(part, int):
        return True
    text = str(part)
    return "[" not in text and text not in _UNION_LABELS and not text[:1].isupper()


def describe_validation_error(error: pydantic.ValidationError) -> str:
    """``input.0.role: Field required``: the field path without pydantic's internal labels."""
    parts = []
    for detail in error.errors()[:5]:
        path = ".".join(str(p) for p in detail["loc"] if _is_field(p))
        parts.append(f"{path or 'body'}: {detail['msg']}")
    return "; ".join(dict.fromkeys(parts))


class ModelAdapter:
    """Wraps a loaded pyfunc model behind the two calls the worker makes."""

    def __init__(self, pyfunc_model: Any):
        from mlflow.pyfunc import ResponsesAgent

        self.pyfunc_model = pyfunc_model
        raw = _raw_model(pyfunc_model)
        self.agent = raw if isinstance(raw, ResponsesAgent) else None

    @property
    def kind(self) -> str:
        return "responses_agent" if self.agent is not None else "pyfunc"

    def parse(self, body: dict[str, Any]) -> Any:
        """Validate the body before any model code runs, so bad input is a 400, not a 500."""
        if self.agent is None:
            return body
        from mlflow.types.responses import ResponsesAgentRequest

        try:
            return ResponsesAgentRequest(**body)
        except pydantic.ValidationError as error:
            raise InvalidRequest(f"Invalid Responses request: {describe_validation_error(error)}") from None
        except TypeError as error:
            raise InvalidRequest(f"Invalid Responses request: {error}") from None

    def predict(self, request: Any) -> dict[str, Any]:
        if self.agent is None:
            return _jsonable(self.pyfunc_model.predict(request))
        return _dump(self.agent.predict(request))

    def predict_stream(self, request: Any) -> Iterator[dict[str, Any]]:
        if self.agent is None:
            for chunk in self.pyfunc_model.predict_stream(request):
                yield _jsonable(chunk)
            return
        for event in self.agent.predict_stream(request):
            yield _dump(event)


def _raw_model(pyfunc_model: Any) -> Any:
    try:
        return pyfunc_model.get_raw_model()
    except Exception:
        return None


def _dump(value: Any) -> dict[str, Any]:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(exclude_none=True)
    return value


def _jsonable(value: Any) -> Any:
    """pyfunc models may return DataFrames or arrays; turn them into JSON-able values."""
    if hasattr(value, "to_dict"):
        return value.to_dict(orient="records")
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
