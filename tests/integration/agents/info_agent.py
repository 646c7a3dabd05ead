"""A test agent that reports where it runs and misbehaves on request (custom_inputs):

- ``raise``: raise ValueError with that message; ``crash``: exit the process at once;
- ``events``/``delay``: stream that many deltas, sleeping between them;
- ``closed_marker``: a path written when the stream is closed early (client went away);
- ``env``: names of environment variables to report back;
- ``big_output``: answer with that many characters; ``big_span``: trace a span whose input has
  that many characters; ``deep_output``: answer with lists nested that deep;
- ``poison_connection``: write a bad frame header on the worker's connections to the gateway
  (a worker alive but its connection broken).

Environment (set with ``environment_vars`` at deploy): ``INFO_AGENT_LOAD_DELAY`` seconds to
sleep while loading; ``INFO_AGENT_FAIL_IF`` a path whose existence makes loading fail;
``INFO_AGENT_SLEEP`` seconds to sleep in every predict (a slower version);
``INFO_AGENT_PREFIX`` text put before every answer (a version whose answers a scorer fails).
"""

import os
import socket
import stat
import struct
import sys
import time
from pathlib import Path
from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse, ResponsesAgentStreamEvent


if os.environ.get("AGENTWHARF_SERVED_ENTITY"):  # in a worker, not while being logged
    time.sleep(float(os.environ.get("INFO_AGENT_LOAD_DELAY", 0)))
    if os.environ.get("INFO_AGENT_FAIL_IF") and Path(os.environ["INFO_AGENT_FAIL_IF"]).exists():
        raise RuntimeError(f"load refused: {os.environ['INFO_AGENT_FAIL_IF']} exists (SECRET_DETAIL_42)")


@mlflow.trace(name="big_span")
def _big_span(text: str) -> int:
    return len(text)


def _deep(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def _poison_connections() -> int:
    """Send a frame header announcing an impossible length on every connected Unix socket."""
    poisoned = 0
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            if sock.family == socket.AF_UNIX and not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                try:  # the event loop's own socket pairs are AF_UNIX too; some are half closed
                    sock.send(struct.pack("!IIBH", 2**31, 0, 4, 0))
                    poisoned += 1
                except OSError:
                    pass
    return poisoned


def _last_user_text(request: ResponsesAgentRequest) -> str:
    return next((m.content for m in reversed(request.input) if getattr(m, "role", None) == "user"), "")


def _info(custom: dict) -> dict:
    return {
        "pid": os.getpid(),
        "python": sys.executable,
        "entity": os.environ.get("AGENTWHARF_SERVED_ENTITY"),
        "experiment_id": os.environ.get("MLFLOW_EXPERIMENT_ID"),
        # Models from code run this file from the model's files as the worker fetched them.
        "model_files": os.path.dirname(os.path.abspath(__file__)),
        "env": {name: os.environ.get(name) for name in custom.get("env", [])},
    }


class InfoAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        custom = request.custom_inputs or {}
        if custom.get("raise"):
            raise ValueError(custom["raise"])
        if custom.get("crash"):
            os._exit(17)
        time.sleep(float(custom.get("sleep", 0)) + float(os.environ.get("INFO_AGENT_SLEEP", 0)))
        if custom.get("poison_connection"):
            _poison_connections()
        if custom.get("big_span"):
            _big_span("s" * int(custom["big_span"]))
        text = "x" * int(custom["big_output"]) if custom.get("big_output") else f"Echo: {_last_user_text(request)}"
        text = os.environ.get("INFO_AGENT_PREFIX", "") + text
        item = self.create_text_output_item(text=text, id=str(uuid4()))
        outputs = _info(custom)
        if custom.get("deep_output"):
            outputs["deep"] = _deep(int(custom["deep_output"]))
        return ResponsesAgentResponse(output=[item], custom_outputs=outputs)

    def predict_stream(self, request: ResponsesAgentRequest):
        custom = request.custom_inputs or {}
        item_id = str(uuid4())
        try:
            for i in range(int(custom.get("events", 3))):
                time.sleep(float(custom.get("delay", 0)))
                yield ResponsesAgentStreamEvent(**self.create_text_delta(delta=f"part{i} ", item_id=item_id))
            if custom.get("raise_midway"):
                raise RuntimeError(custom["raise_midway"])
            text = f"Echo: {_last_user_text(request)}"
            yield ResponsesAgentStreamEvent(type="response.output_item.done", item=self.create_text_output_item(text=text, id=item_id),
                                            custom_outputs=_info(custom))
        except GeneratorExit:
            if custom.get("closed_marker"):
                Path(custom["closed_marker"]).write_text("closed")
            raise


mlflow.models.set_model(InfoAgent())
