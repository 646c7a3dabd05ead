"""agentwharf.serving.interfaces: each MLflow model interface, loaded for real from the examples
(saved with ``mlflow.pyfunc.save_model``, loaded with ``load_model``), called with dicts as the
worker calls it, on every route."""

import runpy
from pathlib import Path

import mlflow
import pydantic
import pytest
from mlflow.pyfunc import ChatAgent, ChatModel, ResponsesAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse
from mlflow.types.llm import ChatChoice, ChatCompletionResponse, ChatMessage
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

from agentwharf.serving.interfaces import InvalidRequest, adapter_for
from agentwharf.serving.interfaces.base import describe_validation_error
from agentwharf.serving.interfaces.chat_agent import ChatAgentInterface
from agentwharf.serving.interfaces.chat_model import ChatModelInterface
from agentwharf.serving.interfaces.responses_agent import ResponsesAgentInterface

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
META = {"request_id": "r1", "model": "ep"}
HI = {"messages": [{"role": "user", "content": "hi there"}]}
ROWS = [{"quantity": 2, "unit_price": 3.5}, {"quantity": 1, "unit_price": 10.0}]


@pytest.fixture(autouse=True)
def _no_tracing_server(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    mlflow.tracing.disable()
    yield
    mlflow.tracing.reset()  # back to lazily initialised tracing for whatever runs next


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The examples of each interface, saved and loaded the way a worker loads them."""
    root = tmp_path_factory.mktemp("models")
    signature = runpy.run_path(str(EXAMPLES / "pyfunc" / "log_and_deploy.py"))["SIGNATURE"]
    sources = {"responses_agent": ("echo/agent.py", {}), "chat_agent": ("chat_agent/agent.py", {}),
               "chat_model": ("chat_model/model.py", {}), "pyfunc": ("pyfunc/model.py", {"signature": signature})}
    models = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", (root / "mlruns").as_uri())
        mlflow.tracing.disable()
        for kind, (source, extra) in sources.items():
            mlflow.pyfunc.save_model(root / kind, python_model=str(EXAMPLES / source), pip_requirements=["mlflow"], **extra)
            models[kind] = adapter_for(mlflow.pyfunc.load_model(str(root / kind)))
        mlflow.tracing.reset()
    return models


def answer(adapter, body: dict, route: str = "invocations"):
    call = adapter.parse(dict(body), route)
    assert not call.stream
    return call.dialect.answer(adapter.predict(call.request), META)


def streamed(adapter, body: dict, route: str = "invocations") -> tuple[list, object]:
    """The route's events and the record's assembled output."""
    call = adapter.parse({**body, "stream": True}, route)
    assert call.stream
    seen: list = []

    def observed(events):
        for event in events:
            seen.append(event)
            yield event

    events = list(call.dialect.events(observed(adapter.predict_stream(call.request)), META))
    return events, adapter.assemble(seen)


def refusal(adapter, body: dict, route: str = "invocations") -> str:
    with pytest.raises(InvalidRequest) as info:
        call = adapter.parse(dict(body), route)
        adapter.predict(call.request)  # a pyfunc's signature is enforced by MLflow as it predicts
    return str(info.value)


# -- which interface -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["responses_agent", "chat_agent", "chat_model", "pyfunc"])
def test_each_example_is_served_as_its_interface(loaded, kind):
    assert loaded[kind].kind == kind
    assert loaded[kind].streams is (kind != "pyfunc")  # the pyfunc example has no predict_stream


def test_a_model_without_a_raw_model_is_plain_pyfunc():
    class Broken:
        metadata = mlflow.models.Model()
        _predict_stream_fn = None

        def get_raw_model(self):
            raise NotImplementedError

    assert adapter_for(Broken()).kind == "pyfunc"


class NoStreamResponses(ResponsesAgent):
    def predict(self, request):
        return ResponsesAgentResponse(output=[self.create_text_output_item(text="x", id="1")])


class NoStreamChatAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content="x", id="1")])


class NoStreamChatModel(ChatModel):
    def predict(self, context, messages, params):
        return ChatCompletionResponse(choices=[ChatChoice(message=ChatMessage(role="assistant", content="x"))])


@pytest.mark.parametrize("adapter, body", [
    (ResponsesAgentInterface(NoStreamResponses()), {"input": [{"role": "user", "content": "hi"}]}),
    (ChatAgentInterface(NoStreamChatAgent()), HI),
    (ChatModelInterface(NoStreamChatModel()), HI),
])
def test_stream_true_without_predict_stream_is_refused_before_the_model_runs(adapter, body):
    assert adapter.streams is False
    message = refusal(adapter, {**body, "stream": True})
    assert f"({adapter.label}) does not implement predict_stream" in message and '"stream": true' in message
    assert answer(adapter, body)  # without "stream" it answers


def test_a_pyfunc_without_predict_stream_refuses_stream_true(loaded):
    assert "does not implement predict_stream" in refusal(loaded["pyfunc"], {"dataframe_records": ROWS, "stream": True})


# -- validation messages ---------------------------------------------------------------------


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


@pytest.mark.parametrize("body, field", [
    ({"input": [{"content": "hi"}]}, "input.0.role"),
    ({"input": [{"role": "user", "content": "hi"}], "custom_inputs": 3}, "custom_inputs"),
])
def test_responses_agent_names_the_bad_field(loaded, body, field):
    message = refusal(loaded["responses_agent"], body)
    assert message.startswith("Invalid ResponsesAgent request: ") and f"{field}:" in message


def test_non_string_keys_are_an_invalid_request(loaded):
    for kind in ("responses_agent", "chat_agent"):
        with pytest.raises(InvalidRequest):
            loaded[kind].parse({1: "x", "input": [], "messages": []})


def test_a_responses_agent_takes_input_as_one_string(loaded):
    """As OpenAI's Responses API does (and databricks-sdk's query(input="...") sends)."""
    text = answer(loaded["responses_agent"], {"input": "hi there", "context": {"user_id": "u"}})
    assert "hi there" in str(text)


def test_a_chat_request_to_a_responses_agent_is_told_the_chat_route(loaded):
    message = refusal(loaded["responses_agent"], HI)
    assert "'input' is required" in message and '{"input": [' in message
    assert "looks like a chat request ('messages')" in message and "/serving-endpoints/chat/completions" in message


def test_a_responses_request_to_a_chat_agent_is_told_the_responses_route(loaded):
    message = refusal(loaded["chat_agent"], {"input": [{"role": "user", "content": "x"}]})
    assert message.startswith("Invalid ChatAgent request: 'messages' is required")
    assert '{"messages": [' in message and "/serving-endpoints/responses" in message


def test_a_chat_agent_message_without_a_role_is_named(loaded):
    assert "messages.0.role: Field required" in refusal(loaded["chat_agent"], {"messages": [{"content": "x"}]})


def test_a_chat_model_names_its_bad_parameter_and_the_shape(loaded):
    message = refusal(loaded["chat_model"], {**HI, "temperature": "hot"})
    assert "`temperature` must be of type float, got str" in message and "chat completions request" in message
    assert "Responses request ('input'), which this model does not take" in refusal(loaded["chat_model"], {"input": "x"})


@pytest.mark.parametrize("kind, route, fits", [
    ("chat_model", "responses", ["/serving-endpoints/chat/completions", "/invocations"]),
    ("pyfunc", "responses", ["/invocations"]),
    ("pyfunc", "chat", ["/invocations"]),
])
def test_a_route_that_cannot_reach_the_model_says_which_does(loaded, kind, route, fits):
    message = refusal(loaded[kind], {"model": "ep", **HI}, route)
    assert "cannot reach this endpoint's model" in message
    assert all(fit in message for fit in fits)


# -- ResponsesAgent --------------------------------------------------------------------------


def test_responses_agent_answers_without_none_fields(loaded):
    result = answer(loaded["responses_agent"], {"input": [{"role": "user", "content": "hi"}]})
    assert result["output"][0]["content"][0]["text"] == "Echo: hi"

    def has_none(value):
        if isinstance(value, dict):
            return any(v is None or has_none(v) for v in value.values())
        if isinstance(value, list):
            return any(has_none(v) for v in value)
        return False

    assert not has_none(result)


def test_responses_agent_stream_is_dicts_and_records_the_finished_items(loaded):
    events, assembled = streamed(loaded["responses_agent"], {"input": [{"role": "user", "content": "yo"}]})
    assert all(type(e) is dict for e in events)
    assert [e["type"] for e in events] == ["response.output_text.delta"] * 2 + ["response.output_item.done"]
    assert assembled == {"output": [events[-1]["item"]]}


def test_responses_agent_on_the_chat_route_records_its_own_items(loaded):
    chunks, assembled = streamed(loaded["responses_agent"], {"model": "ep", **HI}, "chat")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: hi there"
    assert assembled["output"][0]["content"][0]["text"] == "Echo: hi there"


# -- ChatAgent -------------------------------------------------------------------------------


def test_chat_agent_answers_messages_and_custom_outputs(loaded):
    result = answer(loaded["chat_agent"], {**HI, "context": {"conversation_id": "c1"}, "custom_inputs": {"k": 1}})
    assert [(m["role"], m["content"]) for m in result["messages"]] == [("assistant", "Echo: hi there")]
    assert result["messages"][0]["id"]
    assert result["custom_outputs"] == {"conversation_id": "c1", "custom_inputs": {"k": 1}}


def test_chat_agent_streams_chunks_and_records_the_joined_message(loaded):
    chunks, assembled = streamed(loaded["chat_agent"], HI)
    assert [c["delta"]["content"] for c in chunks] == ["Echo:", " hi", " there"]
    assert len({c["delta"]["id"] for c in chunks}) == 1
    assert assembled["messages"] == [{"role": "assistant", "content": "Echo: hi there", "id": chunks[0]["delta"]["id"]}]
    assert assembled["custom_outputs"] == {"conversation_id": None, "custom_inputs": {}}


def test_chat_agent_on_the_responses_route(loaded):
    body = {"model": "ep", "input": "hey", "instructions": "be brief", "custom_inputs": {"k": 2}}
    result = answer(loaded["chat_agent"], body, "responses")
    assert result["object"] == "response" and result["id"] == "resp_r1" and result["status"] == "completed"
    assert result["output"][0]["type"] == "message" and result["output"][0]["content"][0]["text"] == "Echo: hey"
    assert result["custom_outputs"]["custom_inputs"] == {"k": 2}
    events, _ = streamed(loaded["chat_agent"], body, "responses")
    assert [e["type"] for e in events] == ["response.created"] + ["response.output_text.delta"] * 2 + [
        "response.output_item.done", "response.completed"]
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Echo: hey"
    assert events[-2]["custom_outputs"]["custom_inputs"] == {"k": 2}


def test_chat_agent_on_the_chat_route(loaded):
    body = {"model": "ep", "temperature": 0.1, "messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]}],
            "context": {"conversation_id": "c9"}}
    result = answer(loaded["chat_agent"], body, "chat")
    assert result["object"] == "chat.completion" and result["model"] == "ep"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Echo: parts"}
    assert result["custom_outputs"]["conversation_id"] == "c9"
    chunks, assembled = streamed(loaded["chat_agent"], body, "chat")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Echo: parts"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert assembled["messages"][0]["content"] == "Echo: parts"


def test_chat_agent_error_is_the_agents_own(loaded):
    call = loaded["chat_agent"].parse({"messages": [{"role": "system", "content": "no user here"}]})
    with pytest.raises(ValueError, match="no user message"):
        loaded["chat_agent"].predict(call.request)


# -- ChatModel -------------------------------------------------------------------------------


def test_chat_model_answers_a_chat_completion_with_its_parameters(loaded):
    result = answer(loaded["chat_model"], {**HI, "temperature": 1, "max_tokens": 2})  # an int temperature, as clients send
    assert result["object"] == "chat.completion"
    assert result["choices"][0]["message"] == {"role": "assistant", "content": "Echo: hi"}
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_chat_model_streams_chunks_and_records_the_completion(loaded):
    chunks, assembled = streamed(loaded["chat_model"], HI)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Echo: hi there"
    assert assembled["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Echo: hi there"},
                                     "finish_reason": "stop"}]


def test_chat_model_on_the_chat_route_gets_an_id_and_model_name(loaded):
    result = answer(loaded["chat_model"], {"model": "ep", **HI}, "chat")
    assert result["id"] == "chatcmpl-r1" and result["model"] == "echo-chat-model"  # the model's own name is kept
    chunks, _ = streamed(loaded["chat_model"], {"model": "ep", **HI}, "chat")
    assert {c["id"] for c in chunks} == {"chatcmpl-r1"}


# -- plain pyfunc ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"dataframe_split": {"columns": ["quantity", "unit_price"], "data": [[2, 3.5], [1, 10.0]]}},
    {"dataframe_records": ROWS},
    {"instances": ROWS},
    {"inputs": {"quantity": [2, 1], "unit_price": [3.5, 10.0]}},
])
def test_pyfunc_takes_every_scoring_format(loaded, body):
    assert answer(loaded["pyfunc"], body) == {"predictions": [{"total": 7.0}, {"total": 10.0}]}


def test_pyfunc_params_reach_the_model(loaded):
    assert answer(loaded["pyfunc"], {"dataframe_records": ROWS, "params": {"discount": 0.1}}) == {
        "predictions": [{"total": 6.3}, {"total": 9.0}]}


def test_pyfunc_refusals_show_the_signature(loaded):
    missing = refusal(loaded["pyfunc"], {"dataframe_records": [{"quantity": 2}]})
    assert "Model is missing inputs ['unit_price']" in missing
    assert "'quantity': long (required), 'unit_price': double (required)" in missing
    bad_param = refusal(loaded["pyfunc"], {"dataframe_records": ROWS, "params": {"discount": "x"}})
    assert "Invalid parameters found: {('discount'" in bad_param


def test_pyfunc_without_a_scoring_key_gets_the_protocol_without_mlflow_1_advice(loaded):
    message = refusal(loaded["pyfunc"], {"foo": 1})
    assert "exactly one of the input fields" in message and '"dataframe_split"' in message
    assert "mlflow==1.30.0" not in message


def test_a_chat_request_to_a_pyfunc_says_it_is_not_this_models_shape(loaded):
    message = refusal(loaded["pyfunc"], HI)
    assert "looks like a chat request ('messages'), which this model's signature does not take" in message


class WordStreamer(mlflow.pyfunc.PythonModel):
    """A plain pyfunc model that streams (MLflow marks it streamable when it is saved)."""

    def predict(self, context, model_input, params=None):
        return ["whole"]

    def predict_stream(self, context, model_input, params=None):
        for word in str(model_input["prompt"]).split():
            yield {"word": word}


def test_a_streamable_pyfunc_streams_and_its_bad_input_is_refused_before_the_stream(tmp_path):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    mlflow.pyfunc.save_model(tmp_path / "streamer", python_model=WordStreamer(), pip_requirements=["mlflow"],
                             signature=ModelSignature(inputs=Schema([ColSpec("string", "prompt")])))
    adapter = adapter_for(mlflow.pyfunc.load_model(str(tmp_path / "streamer")))
    assert adapter.kind == "pyfunc" and adapter.streams
    events, assembled = streamed(adapter, {"inputs": {"prompt": ["a b"]}})
    assert events == [{"word": "a"}, {"word": "b"}] and assembled == events
    with pytest.raises(InvalidRequest, match="Model is missing inputs \\['prompt'\\]"):
        adapter.parse({"inputs": {"nope": ["a b"]}, "stream": True})
