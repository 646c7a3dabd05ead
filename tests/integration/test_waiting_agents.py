"""Agents that wait, as on an LLM call: one served version (Small: one worker process) holds
many waiting requests at once, whether the agent blocks in a thread or awaits on the worker's
event loop; async agents answer and stream with their traces stored."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import mlflow
import pytest

from agentwharf import agents
from tests.integration.conftest import AGENTS, _log, rows_for, sse_events

CONCURRENT = 200
#: Long enough that a loaded machine's cost of 200 requests (a second or two here) fits in the
#: bound beside it, and far from what a 16-thread pool took: 13 waits, 37.5 s.
WAIT = 3.0


@pytest.fixture(scope="module")
def deployed(platform):
    """The waiting and the async test agents, each registered and deployed (Small)."""
    deployments = {}
    for agent in ("waiting", "async"):
        model = f"main.tests.{agent}_agent"
        mlflow.register_model(_log(AGENTS / f"{agent}_agent.py"), model)
        deployments[agent] = agents.deploy(model, "1")
    yield deployments
    for deployment in deployments.values():
        agents.delete_deployment(deployment.model_name)


async def _at_once(platform, path: str, body: dict, count: int) -> tuple[float, list[httpx.Response]]:
    """``count`` requests sent together; the wall time from the first sent to the last answered."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=platform.base_url, headers=platform.headers, limits=limits, timeout=60) as client:
        await client.post(path, json={**body, "custom_inputs": {"wait": 0, "gap": 0}})  # a warm worker and connection
        started = time.monotonic()
        answers = await asyncio.gather(*(client.post(path, json=body) for _ in range(count)))
        return time.monotonic() - started, answers


def test_one_version_answers_many_waiting_requests_in_about_one_wait(platform, deployed):
    """200 requests that each block 2 s in a synchronous predict: with one thread per waiting
    request they finish in a few seconds past one wait (the bound leaves room for a loaded
    machine's CPU); a 16-thread pool took 200/16 waits (37.5 s)."""
    path = f"/serving-endpoints/{deployed['waiting'].endpoint_name}/invocations"
    body = {"input": [{"role": "user", "content": "wait"}], "custom_inputs": {"wait": WAIT}}
    wall, answers = asyncio.run(_at_once(platform, path, body, CONCURRENT))
    assert [a.status_code for a in answers] == [200] * CONCURRENT
    assert wall < 4 * WAIT, f"{CONCURRENT} requests waiting {WAIT}s each took {wall:.2f}s"


def test_async_streams_wait_on_the_event_loop_together(platform, deployed):
    """200 streams of an async ``predict_stream`` (4 tokens 0.5 s apart) in about one stream's time."""
    path = f"/serving-endpoints/{deployed['waiting'].endpoint_name}/invocations"
    body = {"input": [{"role": "user", "content": "s"}], "stream": True, "custom_inputs": {"tokens": 4, "gap": WAIT / 4}}
    wall, answers = asyncio.run(_at_once(platform, path, body, CONCURRENT))
    assert [a.status_code for a in answers] == [200] * CONCURRENT
    assert all(len(sse_events(a)) == 6 for a in answers)  # 4 deltas, the finished item, [DONE]
    # A loaded CI machine took 12.3 s (4.1 waits); a 16-thread pool would take 13 waits.
    assert wall < 6 * WAIT, f"{CONCURRENT} streams of {WAIT}s took {wall:.2f}s"


def _trace(http, endpoint: str, answer: httpx.Response):
    request_id = answer.headers["x-request-id"]
    row = rows_for(http, endpoint, {request_id})[request_id]
    return row, mlflow.get_trace(row["trace_id"])


def test_async_agent_answers_with_its_trace_stored(http, deployed):
    endpoint = deployed["async"].endpoint_name
    answer = http.post(f"/serving-endpoints/{endpoint}/invocations", json={"input": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"][0]["content"][0]["text"] == "Async: hi"
    _, trace = _trace(http, endpoint, answer)
    root, predict, think = trace.data.spans
    assert root.name == f"/serving-endpoints/{endpoint}/invocations"
    assert (predict.name, predict.parent_id) == ("predict", root.span_id)
    assert (think.name, think.parent_id, think.outputs) == ("think", predict.span_id, "Async: hi")


@pytest.mark.parametrize("route", ["invocations", "responses"])
def test_async_agent_streams_with_its_trace_stored(http, deployed, route):
    """On the endpoint's own route the stream is awaited on the event loop; the OpenAI route
    reshapes it in a pool thread that advances the agent's generator on the loop."""
    endpoint = deployed["async"].endpoint_name
    if route == "invocations":
        answer = http.post(f"/serving-endpoints/{endpoint}/invocations",
                           json={"input": [{"role": "user", "content": "go on"}], "stream": True})
    else:
        answer = http.post("/serving-endpoints/responses", json={"model": endpoint, "input": "go on", "stream": True})
    assert answer.status_code == 200, answer.text
    events = [json.loads(e) for e in sse_events(answer) if e != "[DONE]"]
    deltas = "".join(e["delta"] for e in events if e.get("type") == "response.output_text.delta")
    assert deltas == "Async: go on"
    row, trace = _trace(http, endpoint, answer)
    assert row["stream"] is True and row["status_code"] == 200
    assert json.loads(row["response"])["output"][0]["content"][0]["text"] == "Async: go on"
    root, stream, think = trace.data.spans
    assert (stream.name, stream.parent_id) == ("predict_stream", root.span_id)
    assert (think.name, think.parent_id) == ("think", stream.span_id)
