"""A scripted OpenAI-compatible provider: the one fake the LLM tests use.

It is a real HTTP server in a process of its own, speaking the OpenAI API the way vLLM, Ollama
or a hosted API does (``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``,
``/v1/responses``, streaming included), so the platform cannot tell it from a real one. Tests
script it per *model name*: every test gives its LLM endpoint a fresh model name and says how
that model behaves (canned answer, stream chunks, tool calls, usage or none, an error status, a
hang), so tests never disturb each other. What the provider received is kept per model too.

    python -m tests.llm_provider --port 8999 --api-key sk-...     # a server
    with ScriptedProvider(api_key) as provider: ...               # one started for a test

Unscripted models answer ``echo: <last user message>`` with token usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx

_scripts: dict[str, dict] = {}
_calls: dict[str, list[dict]] = defaultdict(list)
_api_keys: set[str] = set()


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _last_user_text(messages: list) -> str:
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
            return str(content)
    return ""


def _reply_text(script: dict, body: dict, headers: dict, prompt: str) -> str:
    text = script.get("reply", f"echo: {prompt}")
    if script.get("echo_auth"):
        text += f" (you sent {headers.get('authorization', '')})"
    return text


def _usage(script: dict, prompt: str, completion: str, kind: str = "chat") -> dict | None:
    usage = script.get("usage", True)
    if usage is False:
        return None
    if isinstance(usage, dict):
        return usage
    p, c = _tokens(prompt), _tokens(completion)
    if kind == "responses":
        return {"input_tokens": p, "output_tokens": c, "total_tokens": p + c}
    if kind == "embeddings":
        return {"prompt_tokens": p, "total_tokens": p}
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


async def _json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


async def _sse(send, events, delay: float) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
    for i, event in enumerate(events):
        if i and delay:
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": f"data: {json.dumps(event)}\n\n".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def _chat(script: dict, body: dict, headers: dict, model: str):
    messages = body.get("messages") or []
    prompt = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    tool_calls = script.get("tool_calls") if last.get("role") != "tool" else None
    if last.get("role") == "tool":
        text = script.get("after_tool", "tool said: {content}").format(content=last.get("content"))
    else:
        text = _reply_text(script, body, headers, _last_user_text(messages))
    created, cid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:12]}"
    usage = _usage(script, prompt, text)
    if not body.get("stream"):
        message = {"role": "assistant", "content": None if tool_calls else text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        answer = {"id": cid, "object": "chat.completion", "created": created, "model": model,
                  "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}]}
        if usage:
            answer["usage"] = usage
        return answer, None
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    if tool_calls:
        for i, call in enumerate(tool_calls):
            events.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [{**call, "index": i}]}, "finish_reason": None}]})
        finish = "tool_calls"
    else:
        for piece in script.get("chunks") or [w + " " for w in text.split(" ")]:
            events.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        finish = "stop"
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage and (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    return None, events


def _completions(script: dict, body: dict, headers: dict, model: str):
    prompt = body.get("prompt") if isinstance(body.get("prompt"), str) else json.dumps(body.get("prompt"))
    text = _reply_text(script, body, headers, prompt)
    base = {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion", "created": int(time.time()), "model": model}
    usage = _usage(script, prompt, text)
    if not body.get("stream"):
        answer = {**base, "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}]}
        return ({**answer, "usage": usage} if usage else answer), None
    events = [{**base, "choices": [{"index": 0, "text": w + " ", "finish_reason": None}]} for w in text.split(" ")]
    events.append({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
    if usage and (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    return None, events


def _embeddings(script: dict, body: dict, headers: dict, model: str):
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
    size = script.get("dimensions", 4)
    data = [{"object": "embedding", "index": i, "embedding": [float(len(str(x)) + j) for j in range(size)]}
            for i, x in enumerate(inputs)]
    answer = {"object": "list", "data": data, "model": model}
    if usage := _usage(script, " ".join(map(str, inputs)), "", "embeddings"):
        answer["usage"] = usage
    return answer, None


def _responses(script: dict, body: dict, headers: dict, model: str):
    raw = body.get("input")
    prompt = raw if isinstance(raw, str) else _last_user_text(raw)
    text = _reply_text(script, body, headers, prompt)
    rid, mid = f"resp_{uuid.uuid4().hex[:12]}", f"msg_{uuid.uuid4().hex[:12]}"
    item = {"type": "message", "id": mid, "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    response = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model, "status": "completed",
                "output": [item]}
    if usage := _usage(script, prompt, text, "responses"):
        response["usage"] = usage
    if not body.get("stream"):
        return response, None
    pending = {**response, "status": "in_progress", "output": []}
    pending.pop("usage", None)
    events = [{"type": "response.created", "sequence_number": 0, "response": pending}]
    for i, word in enumerate(text.split(" ")):
        events.append({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": mid, "output_index": 0,
                       "content_index": 0, "delta": word + " "})
    events.append({"type": "response.output_item.done", "sequence_number": len(events), "output_index": 0, "item": item})
    events.append({"type": "response.completed", "sequence_number": len(events), "response": response})
    return None, events


_ROUTES = {"/v1/chat/completions": _chat, "/v1/completions": _completions, "/v1/embeddings": _embeddings,
           "/v1/responses": _responses}


async def _read(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path, raw = scope["path"], await _read(receive)
    headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
    if path == "/health":
        return await _json(send, 200, {"status": "ok"})
    if path == "/_script":
        script = json.loads(raw)
        _scripts[script.pop("model")] = script
        return await _json(send, 200, {})
    if path == "/_calls":
        model = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p).get("model", "")
        return await _json(send, 200, {"calls": _calls.get(model, [])})
    handler = _ROUTES.get(path)
    if handler is None:
        return await _json(send, 404, {"error": {"message": f"no route {path}", "type": "invalid_request_error"}})
    body = json.loads(raw or b"{}")
    model = str(body.get("model", ""))
    script = _scripts.get(model, {})
    # The client's port tells the connections apart: calls on one kept-alive connection share it.
    _calls[model].append({"path": path, "body": body, "authorization": headers.get("authorization"),
                          "client_port": (scope.get("client") or (None, None))[1]})
    if headers.get("authorization") not in {f"Bearer {key}" for key in {script.get("api_key"), *_api_keys} if key}:
        return await _json(send, 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
    if hang := script.get("hang"):
        await asyncio.sleep(hang)
    if status := script.get("status"):
        message = script.get("error", f"scripted failure {status}")
        if script.get("echo_auth"):
            message += f" (you sent {headers.get('authorization')})"
        return await _json(send, status, {"error": {"message": message, "type": "server_error"}})
    answer, events = handler(script, body, headers, model)
    if answer is not None:
        return await _json(send, 200, answer)
    await _sse(send, events, script.get("chunk_delay", 0.0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ScriptedProvider:
    """The provider in a subprocess on a free port; ``script`` and ``calls`` talk to it."""

    def __init__(self, api_key: str, log_dir: Path | None = None):
        self.api_key = api_key
        self.port = free_port()
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 30.0) -> ScriptedProvider:
        out = open(self.log_dir / "llm-provider.log", "ab") if self.log_dir else subprocess.DEVNULL
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        # The key reaches the provider on its stdin, never on a command line other users can read.
        self.process = subprocess.Popen([sys.executable, "-m", "tests.llm_provider", "--port", str(self.port)],
                                        stdin=subprocess.PIPE, stdout=out, stderr=out, env=env, cwd=root)
        self.process.stdin.write(self.api_key.encode() + b"\n")
        self.process.stdin.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the scripted provider exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the scripted provider did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> ScriptedProvider:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def script(self, model: str, **behaviour) -> str:
        """Say how ``model`` answers from now on; returns the model name."""
        httpx.post(f"{self.url}/_script", json={"model": model, **behaviour}, timeout=10).raise_for_status()
        return model

    def calls(self, model: str) -> list[dict]:
        """What the provider received for ``model``: path, body, Authorization and the client's
        port (its connection) of each call."""
        return httpx.get(f"{self.url}/_calls", params={"model": model}, timeout=10).json()["calls"]


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="A scripted OpenAI-compatible provider (tests only)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _api_keys.add(sys.stdin.readline().strip())
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
