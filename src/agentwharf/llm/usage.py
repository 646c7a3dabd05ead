"""Token usage of one LLM call: what the provider reported, or an estimate where it reported
none (flagged, so nobody mistakes it for a count).

The estimate is the usual rule of thumb for English text and BPE tokenizers, four characters a
token, over the text of the prompt and of the answer; it exists so limits and usage totals do
not read zero for providers that never report usage, not to bill anyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

#: Routes whose answers count tokens the Responses way (input/output) rather than the chat way.
_RESPONSES = "responses"


@dataclass(frozen=True)
class Usage:
    prompt: int
    completion: int
    total: int
    estimated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt, "completion_tokens": self.completion, "total_tokens": self.total,
                "estimated": self.estimated}

    def mlflow(self) -> dict[str, int]:
        """MLflow's token usage shape (``mlflow.chat.tokenUsage``, ``mlflow.trace.tokenUsage``)."""
        return {"input_tokens": self.prompt, "output_tokens": self.completion, "total_tokens": self.total}


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / 4) if text else 0


def _text(value: Any) -> str:
    """Every string inside ``value``, joined (message contents, parts, prompts, inputs)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_text(v) for k, v in value.items() if k not in ("role", "type", "id", "model", "object"))
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return ""


def prompt_text(body: dict) -> str:
    """The text a request sends to the model (messages, prompt, input, instructions)."""
    return " ".join(_text(body.get(key)) for key in ("messages", "prompt", "input", "instructions") if key in body)


def answer_text(answer: Any) -> str:
    """The text of an answer (choices, Responses output items); embeddings have none."""
    if not isinstance(answer, dict):
        return ""
    if "choices" in answer:
        return _text([c.get("message") or c.get("text") or "" for c in answer["choices"] if isinstance(c, dict)])
    return _text(answer.get("output", ""))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def reported(answer: Any, route: str) -> Usage | None:
    """The usage the provider put in its answer, if it did."""
    usage = answer.get("usage") if isinstance(answer, dict) else None
    if not isinstance(usage, dict):
        return None
    keys = ("input_tokens", "output_tokens") if route == _RESPONSES else ("prompt_tokens", "completion_tokens")
    prompt, completion, total = _int(usage.get(keys[0])), _int(usage.get(keys[1])), _int(usage.get("total_tokens"))
    if prompt is None and total is None:
        return None
    prompt = prompt if prompt is not None else total
    completion = completion if completion is not None else max(0, (total or 0) - prompt)
    return Usage(prompt, completion, total if total is not None else prompt + completion)


def usage_of(body: dict, answer: Any, route: str) -> Usage:
    """Reported usage, or an estimate from the texts."""
    found = reported(answer, route)
    if found is not None:
        return found
    prompt, completion = estimate_tokens(prompt_text(body)), estimate_tokens(answer_text(answer))
    return Usage(prompt, completion, prompt + completion, estimated=True)


def max_tokens(body: dict) -> int | None:
    """The bound a request puts on its answer, if any (for rate limit reservations)."""
    for key in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
        if (value := _int(body.get(key))) is not None:
            return value
    return None
