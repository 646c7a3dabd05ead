"""agentwharf.serving.model_adapter: calling a loaded ResponsesAgent with dicts."""

import mlflow
import pydantic
import pytest
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent

from agentwharf.serving.model_adapter import InvalidRequest, ModelAdapter, describe_validation_error


@pytest.fixture(autouse=True)
def _no_tracing_server(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.tracing.disable()
    yield
    mlflow.tracing.reset()  # back to lazily initialised tracing for whatever runs next


class EchoAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        text = request.input[-1].content
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=f"echo: {text}", id="m1")])

    def predict_stream(self, request: ResponsesAgentRequest):
        text = request.input[-1].content
        yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=text, item_id="m1"))
        yield ResponsesAgentStreamEvent(
            type="response.output_item.done", item=self.create_text_output_item(text=text, id="m1")
        )


class FakePyFuncModel:
    """Stands in for MLflow's PyFuncModel: only what the adapter touches."""

    def __init__(self, raw):
        self._raw = raw

    def get_raw_model(self):
        return self._raw


def validation_error(**body) -> pydantic.ValidationError:
    with pytest.raises(pydantic.ValidationError) as info:
        ResponsesAgentRequest(**body)
    return info.value


def test_describe_validation_error_names_the_field_path():
    message = describe_validation_error(validation_error(input=[{"content": "hi"}]))
    assert "input.0.role: Field required" in message
    assert "function-after" not in message and "[" not in message


def test_describe_validation_error_top_level_field():
    assert describe_validation_error(validation_error(input="not a list")) == "input: Input should be a valid list"
    assert describe_validation_error(validation_error()) == "input: Field required"


def test_describe_validation_error_drops_union_member_labels():
    # content is `str | list[...]`; pydantic labels each union member in `loc` ("str", "list[...]").
    message = describe_validation_error(validation_error(input=[{"role": "user", "content": 5}]))
    assert "input.0.content: Input should be a valid string" in message
    assert ".str" not in message


def adapter():
    return ModelAdapter(FakePyFuncModel(EchoAgent()))


def test_responses_agent_is_detected():
    assert adapter().kind == "responses_agent"


def test_a_model_without_raw_responses_agent_is_plain_pyfunc():
    class Broken:
        def get_raw_model(self):
            raise NotImplementedError

    assert ModelAdapter(Broken()).kind == "pyfunc"
    assert ModelAdapter(FakePyFuncModel(object())).kind == "pyfunc"


@pytest.mark.parametrize("body, field", [
    ({"input": [{"content": "hi"}]}, "input.0.role"),
    ({}, "input"),
    ({"input": [{"role": "user", "content": "hi"}], "custom_inputs": 3}, "custom_inputs"),
])
def test_parse_rejects_bad_input_with_invalid_request(body, field):
    with pytest.raises(InvalidRequest, match=r"^Invalid Responses request: ") as info:
        adapter().parse(body)
    assert f"{field}:" in str(info.value)


def test_parse_rejects_non_string_keys_as_invalid_request():
    with pytest.raises(InvalidRequest):
        adapter().parse({1: "x"})


def test_predict_returns_a_dict_without_none_fields():
    model = adapter()
    result = model.predict(model.parse({"input": [{"role": "user", "content": "hi"}]}))
    assert isinstance(result, dict)
    assert result["output"][0]["content"][0]["text"] == "echo: hi"

    def has_none(value):
        if isinstance(value, dict):
            return any(v is None or has_none(v) for v in value.values())
        if isinstance(value, list):
            return any(has_none(v) for v in value)
        return False

    assert not has_none(result)


def test_predict_stream_yields_dicts():
    model = adapter()
    events = list(model.predict_stream(model.parse({"input": [{"role": "user", "content": "yo"}]})))
    assert all(type(e) is dict for e in events)
    assert [e["type"] for e in events] == ["response.output_text.delta", "response.output_item.done"]
    assert events[0]["delta"] == "yo"
    assert events[1]["item"]["content"][0]["text"] == "yo"
    assert all(None not in e.values() for e in events)


def test_pyfunc_model_gets_the_body_unchanged_and_dataframes_become_records():
    class Frame:
        def to_dict(self, orient):
            assert orient == "records"
            return [{"a": 1}]

    class PyFunc:
        def get_raw_model(self):
            return object()

        def predict(self, data):
            self.seen = data
            return Frame()

    raw = PyFunc()
    model = ModelAdapter(raw)
    body = {"anything": [1, 2]}
    assert model.parse(body) is body
    assert model.predict(body) == [{"a": 1}]
    assert raw.seen is body
