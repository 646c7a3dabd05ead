"""agentwharf.serving.openai_compat: the OpenAI Responses API dialect."""

from agentwharf.serving.openai_compat import normalize_openai_request, to_openai_response, wrap_openai_stream

META = {"request_id": "abc123", "model": "agents_main-default-echo"}


def test_string_input_becomes_one_user_message_and_model_is_removed():
    body = {"model": "agents_echo", "input": "hello", "temperature": 0.2}
    assert normalize_openai_request(body) == {"input": [{"role": "user", "content": "hello"}], "temperature": 0.2}
    assert body["model"] == "agents_echo"  # the caller's dict is left alone


def test_instructions_become_a_leading_system_message():
    body = {"model": "m", "instructions": "be brief", "input": [{"role": "user", "content": "hi"}]}
    assert normalize_openai_request(body) == {
        "input": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    }


def test_instructions_with_string_input():
    assert normalize_openai_request({"input": "hi", "instructions": "sys"})["input"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
    ]


def test_list_input_without_instructions_is_unchanged():
    items = [{"role": "user", "content": "a"}, {"type": "function_call_output", "call_id": "c", "output": "1"}]
    assert normalize_openai_request({"input": items}) == {"input": items}


def test_to_openai_response_wraps_output_in_a_completed_response():
    output = {"output": [{"type": "message", "id": "m1", "role": "assistant", "content": []}]}
    response = to_openai_response(output, META)
    assert response["object"] == "response"
    assert response["id"] == "resp_abc123"
    assert response["model"] == "agents_main-default-echo"
    assert response["status"] == "completed"
    assert isinstance(response["created_at"], int) and response["created_at"] > 1_600_000_000
    assert response["output"] == output["output"]


def test_wrap_openai_stream_frames_and_numbers_events():
    item = {"type": "message", "id": "m1", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}
    events = iter([
        {"type": "response.output_text.delta", "item_id": "m1", "delta": "h"},
        {"type": "response.output_text.delta", "item_id": "m1", "delta": "i"},
        {"type": "response.output_item.done", "item": item},
    ])
    out = list(wrap_openai_stream(events, META))

    assert [e["type"] for e in out] == [
        "response.created",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.done",
        "response.completed",
    ]
    numbers = [e["sequence_number"] for e in out]
    assert numbers == sorted(set(numbers)) and numbers[0] == 0

    created, completed = out[0]["response"], out[-1]["response"]
    assert created["id"] == completed["id"] == "resp_abc123"
    assert created["status"] == "in_progress" and created["output"] == []
    assert completed["status"] == "completed"
    assert completed["model"] == "agents_main-default-echo"
    assert completed["output"] == [item]
    assert out[1]["delta"] == "h" and out[3]["item"] == item


def test_empty_stream_is_still_created_then_completed():
    out = list(wrap_openai_stream(iter([]), META))
    assert [e["type"] for e in out] == ["response.created", "response.completed"]
    assert out[1]["sequence_number"] == 1
    assert out[1]["response"]["output"] == []


def test_closing_the_wrapped_stream_closes_the_agent_stream():
    closed = []

    def agent_events():
        try:
            yield {"type": "response.output_text.delta", "delta": "a"}
            yield {"type": "response.output_text.delta", "delta": "b"}
        finally:
            closed.append(True)

    stream = wrap_openai_stream(agent_events(), META)
    next(stream)  # response.created
    next(stream)  # first delta
    stream.close()  # the client went away
    assert closed == [True]


# -- Chat Completions --------------------------------------------------------------------------

from agentwharf.serving.openai_compat import normalize_chat_request, to_chat_completion, wrap_chat_stream  # noqa: E402


def test_chat_request_becomes_a_responses_request():
    body = normalize_chat_request({
        "model": "ep", "max_tokens": 12, "n": 1, "temperature": 0.2,
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
    })
    assert body == {"input": [{"role": "system", "content": "sys"}, {"role": "user", "content": "ab"}],
                    "max_output_tokens": 12, "temperature": 0.2}


def test_chat_request_without_messages_has_no_input():
    assert "input" not in normalize_chat_request({"model": "ep"})


def test_chat_completion_joins_the_message_text():
    output = {"output": [
        {"type": "message", "id": "1", "role": "assistant", "content": [{"type": "output_text", "text": "Hel"}, {"type": "output_text", "text": "lo"}]},
        {"type": "function_call", "id": "2", "name": "f", "arguments": "{}", "call_id": "c"},
    ]}
    answer = to_chat_completion(output, {"request_id": "r1", "model": "ep"})
    assert answer["object"] == "chat.completion" and answer["id"] == "chatcmpl-r1" and answer["model"] == "ep"
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}]


def test_chat_stream_relays_deltas_and_skips_items_already_streamed():
    events = iter([
        {"type": "response.output_text.delta", "item_id": "i1", "delta": "Hi"},
        {"type": "response.output_text.delta", "item_id": "i1", "delta": " there"},
        {"type": "response.output_item.done", "item": {"type": "message", "id": "i1", "content": [{"type": "output_text", "text": "Hi there"}]}},
        {"type": "response.output_item.done", "item": {"type": "message", "id": "i2", "content": [{"type": "output_text", "text": "!"}]}},
    ])
    chunks = list(wrap_chat_stream(events, {"request_id": "r", "model": "ep"}))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "Hi there!"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_an_agents_invocations_route_takes_a_string_and_chat_messages_too():
    from agentwharf.serving.worker import _agent_invocation

    listed = {"input": [{"role": "user", "content": "hi"}], "custom_inputs": {"a": 1}}
    assert _agent_invocation(listed) == listed
    assert _agent_invocation({"input": "hi", "context": {"user_id": "u"}}) == {
        "input": [{"role": "user", "content": "hi"}], "context": {"user_id": "u"}}
    chat = _agent_invocation({"messages": [{"role": "system", "content": "brief"}, {"role": "user", "content": "hi"}],
                              "client_request_id": "r1"})
    assert chat["input"] == [{"role": "system", "content": "brief"}, {"role": "user", "content": "hi"}]
    assert "messages" not in chat and chat["client_request_id"] == "r1"
    # input wins over messages; a body with neither is left for the worker to refuse by name.
    assert _agent_invocation({"input": [], "messages": [{"role": "user", "content": "x"}]})["input"] == []
    assert _agent_invocation({"inputs": {"x": 1}}) == {"inputs": {"x": 1}}
