"""Review instructions of a deployed agent, which its reviewers read first in the review app
(``agents.set_review_instructions`` / ``get_review_instructions``, as in databricks-agents):

    GET /api/2.0/agents/review-instructions/{model_name}   CAN_VIEW on an endpoint serving it
    PUT /api/2.0/agents/review-instructions/{model_name}   {"instructions": markdown}; CAN_MANAGE
                                                            on an endpoint serving it
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control.routes import Body, CallerDep, Control, ControlState
from agentwharf.errors import InvalidParameter, NotFound, PermissionDenied
from agentwharf.store.database import Database
from agentwharf.store.models import ReviewInstructions

router = APIRouter()
#: Markdown longer than this is refused (a page of instructions, not a book).
MAX_CHARS = 100_000


def read(db: Database, model_name: str) -> str:
    """The model's instructions ('' when none were set)."""
    with db.session() as session:
        row = session.get(ReviewInstructions, model_name)
        return row.instructions if row is not None else ""


def _write(db: Database, model_name: str, instructions: str, who: str) -> None:
    with db.session() as session:
        row = session.get(ReviewInstructions, model_name)
        if row is None:
            session.add(ReviewInstructions(model_name=model_name, instructions=instructions, updated_by=who))
        else:
            row.instructions, row.updated_by = instructions, who


def _require_on_a_deployment(control: ControlState, model_name: str, caller: Caller | None, level: PermissionLevel) -> None:
    endpoints = {endpoint.name for endpoint, _ in control.deployments.find(model_name)}
    if not endpoints:
        raise NotFound(f"Model {model_name!r} is not deployed; review instructions belong to a deployed agent")
    if caller is None or any(control.level_of(caller, name).allows(level) for name in endpoints):
        return
    if not any(control.level_of(caller, name).allows(PermissionLevel.CAN_VIEW) for name in endpoints):
        raise NotFound(f"Model {model_name!r} is not deployed on an endpoint you may see")
    raise PermissionDenied(f"{caller.name!r} lacks {level.value} on the endpoints serving {model_name!r}")


@router.get("/api/2.0/agents/review-instructions/{model_name}")
def get_review_instructions(model_name: str, control: Control, caller: CallerDep) -> dict:
    _require_on_a_deployment(control, model_name, caller, PermissionLevel.CAN_VIEW)
    return {"model_name": model_name, "instructions": read(control.db, model_name)}


@router.put("/api/2.0/agents/review-instructions/{model_name}")
async def set_review_instructions(model_name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    instructions = body.get("instructions")
    if not isinstance(instructions, str):
        raise InvalidParameter("'instructions' must be a string of Markdown")
    if len(instructions) > MAX_CHARS:
        raise InvalidParameter(f"'instructions' is {len(instructions)} characters; at most {MAX_CHARS} are kept")
    _require_on_a_deployment(control, model_name, caller, PermissionLevel.CAN_MANAGE)
    await asyncio.to_thread(_write, control.db, model_name, instructions, caller.name if caller else "agentwharf")
    return {"model_name": model_name, "instructions": instructions}
