"""Which request shape a model version takes, for the playground and the review app's chat,
read from the ``task`` MLflow writes into the model's MLmodel metadata when it is logged."""

from __future__ import annotations

import asyncio

import yaml

from agentwharf.web.context import WebContext

#: MLflow's metadata task -> the playground's request shape.
_TASKS = {"agent/v1/responses": "responses", "agent/v2/chat": "chat_agent", "agent/v1/chat": "chat_model"}
SHAPES = ("responses", "chat_agent", "chat_model", "pyfunc")


def shape_from_mlmodel(mlmodel: bytes | None) -> str:
    if not mlmodel:
        return "responses"
    try:
        metadata = (yaml.safe_load(mlmodel) or {}).get("metadata") or {}
    except yaml.YAMLError:
        return "pyfunc"
    return _TASKS.get(str(metadata.get("task", "")), "pyfunc")


async def shape_of(context: WebContext, model: str, version: str) -> str:
    key = (model, version)
    if key not in context.shapes:
        files = await asyncio.to_thread(context.control.registry.model_files, model, version, ("MLmodel",))
        context.shapes[key] = shape_from_mlmodel(files.get("MLmodel"))
    return context.shapes[key]
