"""A rollout as REST, beside its endpoint:

    GET  /api/2.0/serving-endpoints/{name}/rollout           the latest rollout: state, traffic
                                                             share, the window's figures per gate,
                                                             every decision; CAN_VIEW
    POST /api/2.0/serving-endpoints/{name}/rollout/promote   all traffic to the candidate now; CAN_MANAGE
    POST /api/2.0/serving-endpoints/{name}/rollout/abort     all traffic back to the current version; CAN_MANAGE

A rollout starts with ``POST /api/2.0/agents/deployments:deploy`` and a ``rollout`` object
(``agents.deploy(..., rollout=Rollout(...))``, ``agentwharf deploy --canary``).
"""

from __future__ import annotations

from fastapi import APIRouter

from agentwharf.control.routes import CallerDep, Control

router = APIRouter()


@router.get("/api/2.0/serving-endpoints/{name}/rollout")
def get_rollout(name: str, control: Control, caller: CallerDep) -> dict:
    return control.rollouts.view(name, caller)


@router.post("/api/2.0/serving-endpoints/{name}/rollout/promote")
async def promote_rollout(name: str, control: Control, caller: CallerDep) -> dict:
    return await control.rollouts.promote(name, caller)


@router.post("/api/2.0/serving-endpoints/{name}/rollout/abort")
async def abort_rollout(name: str, control: Control, caller: CallerDep) -> dict:
    return await control.rollouts.abort(name, caller)
