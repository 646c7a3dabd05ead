"""agentwharf.serving.interfaces.chat_agent_openai: ChatAgent requests and answers in the OpenAI
routes' terms (Responses items as the pivot)."""

import pytest

from agentwharf.serving.interfaces import InvalidRequest
from agentwharf.serving.interfaces.chat_agent_openai import (
    MessageJoiner,
    as_responses_events,
    as_responses_output,
    chat_request,
    responses_request,
    to_chat_answer,
)

META = {"request_id": "r1", "model": "ep"}
CALL = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}


def test_chat_request_keeps_context_and_custom_inputs_and_drops_sampling_parameters():
    body = {"model": "ep", "temperature": 0.3, "n": 1, "context": {"conversation_id": "c"}, "custom_inputs": {"k": 1},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    assert chat_request(body) == {"messages": [{"role": "user", "content": "ab"}], "context": {"conversation_id": "c"},
                                  "custom_inputs": {"k": 1}}


def test_a_tool_message_gets_the_name_of_the_call_it_answers():
    messages = chat_request({"messages": [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "content": "2", "tool_call_id": "call_1"},
        {"role": "tool", "content": "?", "tool_call_id": "unknown"},
    ]})["messages"]
    assert messages[2] == {"role": "tool", "content": "2", "tool_call_id": "call_1", "name": "add"}
    assert messages[3]["name"] == "tool"  # a ChatAgent tool message must have one


def test_chat_request_without_messages_is_refused():
    with pytest.raises(InvalidRequest, match="'messages' is required"):
        chat_request({"model": "ep"})


def test_responses_request_becomes_messages_with_mlflows_conversion():
    body = {"model": "ep", "instructions": "sys", "custom_inputs": {"k": 2}, "input": [
        {"role": "user", "content": "add 1"},
        {"type": "function_call", "id": "f1", "call_id": "call_1", "name": "add", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "1"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]},
    ]}
    request = responses_request(body)
    assert request["custom_inputs"] == {"k": 2}
    roles = [(m["role"], m.get("content")) for m in request["messages"]]
    assert roles == [("system", "sys"), ("user", "add 1"), ("assistant", "tool call"), ("tool", "1"), ("user", "thanks")]
    assert request["messages"][3]["name"] == "add" and request["messages"][3]["tool_call_id"] == "call_1"


@pytest.mark.parametrize("body, fragment", [
    ({"model": "ep"}, "'input' is required"),
    ({"input": [{"content": "no role"}]}, "input.0"),
])
def test_bad_responses_requests_are_refused(body, fragment):
    with pytest.raises(InvalidRequest, match="Invalid Responses request") as info:
        responses_request(body)
    assert fragment in str(info.value)


def test_an_answer_becomes_responses_items_with_usage_in_responses_terms():
    output = {"messages": [
        {"role": "assistant", "content": None, "id": "m1", "tool_calls": [CALL]},
        {"role": "tool", "content": "2", "id": "m2", "name": "add", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "It is 2", "id": "m3"},
    ], "custom_outputs": {"k": 1}, "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    result = as_responses_output(output)
    assert [i["type"] for i in result["output"]] == ["function_call", "function_call_output", "message"]
    assert result["output"][0]["call_id"] == "call_1" and result["output"][0]["name"] == "add"
    assert result["output"][1] == {"type": "function_call_output", "call_id": "call_1", "output": "2"}
    assert result["output"][2]["id"] == "m3" and result["output"][2]["content"][0]["text"] == "It is 2"
    assert result["custom_outputs"] == {"k": 1}
    assert result["usage"] == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}
    completion = to_chat_answer({**output, "finish_reason": "stop"}, META)
    assert completion["choices"][0]["message"]["content"] == "It is 2"
    assert completion["usage"] == output["usage"]  # Chat Completions usage stays in its own terms


def chunk(message_id, content, role="assistant", **extra):
    return {"delta": {"role": role, "content": content, "id": message_id}, **extra}


def test_joiner_joins_chunks_by_message_id_in_order():
    joiner = MessageJoiner()
    assert joiner.add(chunk("a", "Hel")) is None
    assert joiner.add(chunk("a", "lo")) is None
    assert joiner.add(chunk("b", "!", custom_outputs={"k": 1})) == "a"
    assert joiner.response() == {"messages": [{"role": "assistant", "content": "Hello", "id": "a"},
                                              {"role": "assistant", "content": "!", "id": "b"}],
                                 "custom_outputs": {"k": 1}}


def test_stream_events_finish_each_message_when_the_next_begins():
    events = list(as_responses_events(iter([chunk("a", "Hel"), chunk("a", "lo"), chunk("b", "!", custom_outputs={"k": 1})])))
    assert [(e["type"], e.get("delta") or e["item"]["content"][0]["text"]) for e in events] == [
        ("response.output_text.delta", "Hel"), ("response.output_text.delta", "lo"),
        ("response.output_item.done", "Hello"), ("response.output_text.delta", "!"), ("response.output_item.done", "!")]
    assert events[-1]["custom_outputs"] == {"k": 1} and "custom_outputs" not in events[2]
    assert events[0]["item_id"] == events[2]["item"]["id"] == "a"


def test_closing_the_events_closes_the_agent_stream():
    closed = []

    def chunks():
        try:
            yield chunk("a", "x")
            yield chunk("a", "y")
        finally:
            closed.append(True)

    events = as_responses_events(chunks())
    next(events)
    events.close()
    assert closed == [True]
