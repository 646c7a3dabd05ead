"""Async agents: which methods the worker awaits on its event loop, and an async generator
read from a pool thread (``async_streams.pulled``)."""

import asyncio
import contextlib
import threading

from mlflow.pyfunc import ChatAgent, ResponsesAgent

from agentwharf.serving.async_streams import pulled
from agentwharf.serving.interfaces.base import is_async
from agentwharf.serving.interfaces.chat_agent import ChatAgentInterface
from agentwharf.serving.interfaces.responses_agent import ResponsesAgentInterface


class _SyncAgent(ResponsesAgent):
    def predict(self, request):
        return None

    def predict_stream(self, request):
        yield from ()


class _AsyncAgent(ResponsesAgent):
    async def predict(self, request):
        return None

    async def predict_stream(self, request):
        yield None


class _AsyncChatAgent(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        return None

    async def predict_stream(self, messages, context=None, custom_inputs=None):
        yield None


def test_async_methods_are_seen_under_mlflows_wrappers():
    assert is_async(_AsyncAgent(), "predict") and is_async(_AsyncAgent(), "predict_stream")
    assert not is_async(_SyncAgent(), "predict") and not is_async(_SyncAgent(), "predict_stream")
    assert not is_async(_SyncAgent(), "no_such_method")


def test_interfaces_say_what_the_worker_awaits():
    sync, asynchronous = ResponsesAgentInterface(_SyncAgent()), ResponsesAgentInterface(_AsyncAgent())
    assert (sync.async_predict, sync.async_stream) == (False, False)
    assert (asynchronous.async_predict, asynchronous.async_stream) == (True, True)
    chat = ChatAgentInterface(_AsyncChatAgent())
    assert (chat.async_predict, chat.async_stream) == (False, True)


def test_pulled_advances_the_generator_on_the_loop_inside_the_given_context():
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    steps, closed = [], []

    async def events():
        try:
            for i in range(3):
                steps.append(threading.current_thread() is runner)
                yield i
        finally:
            closed.append(True)

    @contextlib.contextmanager
    def around():
        steps.append("in")
        yield

    try:
        reader = pulled(events(), loop, around)
        assert next(reader) == 0 and next(reader) == 1
        reader.close()  # the client went away: the agent's generator is closed on the loop
        assert closed == [True]
        assert steps == ["in", True, "in", True, "in"]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()
