"""The rollout controller: a candidate version earns its traffic.

``DeploymentService.deploy(..., rollout=...)`` serves the candidate at the canary share beside
the version that had the traffic and records the rollout (``aw_rollouts``). Every few seconds
``tick`` reads both versions' figures over the current step's window (``rollout_figures``),
judges the gates (``rollout_gates``) and acts: step the traffic up, promote, or roll back at
once. A shadow rollout's first stage keeps the candidate at 0% and has the gateway copy live
requests to it (``serving.shadow``); its figures are then the shadow's answers. Every decision is kept with its reason and figures, tagged on the candidate's model
version in MLflow, logged, and sent to the rollout's ``notify_url``. All state is in the
database, so a restarted platform carries on where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control import rollout_figures
from agentwharf.control.endpoints import EndpointService
from agentwharf.control.rollout_gates import Decision, decide, judge, stage_name
from agentwharf.control.views import entity_config
from agentwharf.errors import AgentwharfError, Conflict, InvalidParameter, NotFound
from agentwharf.rollouts import Rollout, rollout_from_json
from agentwharf.serving.shadow import ShadowTarget, ShadowTraffic
from agentwharf.store.models import Endpoint, RolloutRecord, now_ms

log = logging.getLogger("agentwharf.rollouts")

RUNNING, PROMOTED, ROLLED_BACK, ABORTED = "RUNNING", "PROMOTED", "ROLLED_BACK", "ABORTED"
#: The MLflow model-version tag that carries the latest decision about a version's rollout.
DECISION_TAG = "agentwharf.rollout"
_NOTIFY_ATTEMPTS = 4


def current_entity(endpoint: Endpoint) -> str | None:
    """The agent version with the most traffic on ``endpoint`` (what a candidate is compared with)."""
    routes = [r for r in endpoint.routes or [] if r.get("traffic_percentage", 0) > 0]
    agents = {e.name for e in endpoint.entities if not e.external_model and not e.pending}
    routes = [r for r in routes if r["served_model_name"] in agents]
    return max(routes, key=lambda r: r["traffic_percentage"])["served_model_name"] if routes else None


class RolloutService:
    def __init__(self, endpoints: EndpointService, registry=None, http: httpx.AsyncClient | None = None,
                 shadows: ShadowTraffic | None = None):
        self.endpoints = endpoints
        #: The gateway's shadow traffic, told which candidates get copies (None: no gateway).
        self.shadows = shadows
        self.db = endpoints.db
        #: MlflowRegistry, to tag model versions with decisions (None in unit tests).
        self.registry = registry
        self.http = http

    # -- reads ---------------------------------------------------------------------------

    def running(self, endpoint_name: str) -> RolloutRecord | None:
        with self.db.session() as session:
            return session.scalar(select(RolloutRecord).where(RolloutRecord.endpoint_name == endpoint_name,
                                                              RolloutRecord.state == RUNNING))

    def latest(self, endpoint_name: str) -> RolloutRecord:
        with self.db.session() as session:
            record = session.scalar(select(RolloutRecord).where(RolloutRecord.endpoint_name == endpoint_name)
                                    .order_by(RolloutRecord.created_at.desc(), RolloutRecord.id.desc()).limit(1))
        if record is None:
            raise NotFound(f"Endpoint {endpoint_name!r} has had no rollout")
        return record

    def view(self, endpoint_name: str, caller: Caller | None) -> dict[str, Any]:
        self.endpoints.get(endpoint_name)
        if not self.endpoints.may(caller, endpoint_name, PermissionLevel.CAN_VIEW):
            raise NotFound(f"Endpoint {endpoint_name!r} does not exist")
        record = self.latest(endpoint_name)
        shadow = self.shadows.figures(endpoint_name) if self.shadows is not None and record.spec.get("shadow_percent") else None
        return rollout_view(record, shadow)

    def sync_shadows(self) -> None:
        """Tell the gateway which candidates get shadow copies: those of running rollouts in
        their shadow stage. Called on every change and every tick (so a restart resumes it)."""
        if self.shadows is None:
            return
        with self.db.session() as session:
            running = list(session.scalars(select(RolloutRecord).where(RolloutRecord.state == RUNNING)))
        targets = {}
        for record in running:
            rollout = rollout_from_json(record.spec)
            if rollout.shadowing(record.step):
                targets[record.endpoint_name] = ShadowTarget(record.candidate, rollout.shadow_percent)
        self.shadows.set_targets(targets)

    # -- starting ------------------------------------------------------------------------

    def check_can_start(self, endpoint: Endpoint | None, endpoint_name: str) -> str:
        """The entity a rollout on ``endpoint`` compares with.

        Raises:
            InvalidParameter: nothing serves there yet (a first version has nothing to earn
                traffic from; deploy it without a rollout).
            Conflict: a rollout is already running there.
        """
        current = current_entity(endpoint) if endpoint is not None else None
        if current is None:
            raise InvalidParameter(f"A rollout needs a version already serving traffic on endpoint {endpoint_name!r} "
                                   "to compare with; deploy the first version without a rollout")
        self.refuse_if_running(endpoint_name)
        return current

    def refuse_if_running(self, endpoint_name: str) -> None:
        running = self.running(endpoint_name)
        if running is not None:
            raise Conflict(f"Endpoint {endpoint_name!r} has a rollout of {running.candidate} in progress (id {running.id}); "
                           f"promote or abort it first (agentwharf rollout promote|abort {endpoint_name})")

    def canary_routes(self, endpoint: Endpoint, candidate: str, current: str, percent: int) -> list[dict[str, Any]]:
        """Every agent version's route with ``candidate`` at ``percent`` and ``current`` at the rest."""
        names = [e.name for e in endpoint.entities if not e.external_model and not e.pending]
        shares = {candidate: percent, current: 100 - percent}
        return [{"served_model_name": n, "traffic_percentage": shares.get(n, 0)} for n in dict.fromkeys([*names, candidate])]

    def record(self, endpoint_name: str, candidate: str, current: str, rollout: Rollout, caller: Caller | None) -> RolloutRecord:
        spec = rollout.to_json()
        decision = {"at_ms": now_ms(), "action": "START", "percent": rollout.stages[0], "by": caller.name if caller else None,
                    "reason": _start_reason(rollout, current)}
        row = RolloutRecord(id=uuid.uuid4().hex, endpoint_name=endpoint_name, candidate=candidate, current=current,
                            state=RUNNING, spec=spec, step=0, step_started_ms=now_ms(), decisions=[decision],
                            created_by=caller.name if caller else None)
        with self.db.session() as session:
            session.add(row)
        log.info("rollout %s on %s: %s", row.id, endpoint_name, decision["reason"])
        self.sync_shadows()
        return row

    # -- decisions -----------------------------------------------------------------------

    async def promote(self, endpoint_name: str, caller: Caller | None) -> dict[str, Any]:
        record = self._running_for_change(endpoint_name, caller)
        await self._finish(record, PROMOTED, Decision("PROMOTE", f"promoted by {caller.name if caller else 'the platform'}"),
                           by=caller)
        return rollout_view(self.latest(endpoint_name))

    async def abort(self, endpoint_name: str, caller: Caller | None) -> dict[str, Any]:
        record = self._running_for_change(endpoint_name, caller)
        await self._finish(record, ABORTED, Decision("ROLLBACK", f"aborted by {caller.name if caller else 'the platform'}"),
                           by=caller)
        return rollout_view(self.latest(endpoint_name))

    def _running_for_change(self, endpoint_name: str, caller: Caller | None) -> RolloutRecord:
        self.endpoints.get(endpoint_name)
        self.endpoints.require(caller, endpoint_name, PermissionLevel.CAN_MANAGE)
        record = self.running(endpoint_name)
        if record is None:
            raise Conflict(f"Endpoint {endpoint_name!r} has no rollout in progress")
        return record

    async def tick(self) -> None:
        """Judge every running rollout once."""
        await asyncio.to_thread(self.sync_shadows)
        with self.db.session() as session:
            running = list(session.scalars(select(RolloutRecord).where(RolloutRecord.state == RUNNING)))
        for record in running:
            try:
                await self._judge(record)
            except AgentwharfError as error:
                log.warning("rollout %s on %s: %s (will retry)", record.id, record.endpoint_name, error.message)

    async def run(self, interval: float) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bad tick must not end the controller
                log.exception("rollout controller tick failed")
            await asyncio.sleep(interval)

    async def _judge(self, record: RolloutRecord) -> None:
        endpoint = self.endpoints.find(record.endpoint_name)
        served = {e.name for e in endpoint.entities} if endpoint is not None else set()
        for role, name in (("candidate", record.candidate), ("current version", record.current)):
            if name not in served:
                await self._finish(record, ABORTED, Decision("ABORT", f"the {role} {name} is no longer served"),
                                   move_traffic=False)
                return
        if endpoint.update_state == "IN_PROGRESS":
            return  # the candidate is still loading, or a change is being applied
        rollout = rollout_from_json(record.spec)
        results, candidate, current = await asyncio.to_thread(self._evaluate, record, rollout)
        elapsed = (now_ms() - record.created_at) / 1000
        decision = decide(rollout, results, candidate.requests, record.step, elapsed)
        figures = {"window_start_ms": record.step_started_ms, "percent": rollout.stages[record.step],
                   "stage": stage_name(rollout, record.step), "candidate": candidate.to_json(), "current": current.to_json(),
                   "gates": [r.to_json() for r in results]}
        if rollout.shadowing(record.step) and self.shadows is not None:
            figures["shadow"] = self.shadows.figures(record.endpoint_name)
        self._save(record.id, last_figures=figures)
        if decision.action == "ROLLBACK":
            await self._finish(record, ROLLED_BACK, decision, figures=figures)
        elif decision.action == "PROMOTE":
            await self._finish(record, PROMOTED, decision, figures=figures)
        elif decision.action == "STEP":
            await self._step(record, rollout, decision, figures)

    def _evaluate(self, record: RolloutRecord, rollout: Rollout):
        scorers = sorted({g.scorer for g in rollout.gates if g.scorer})
        # In the shadow stage the candidate answers only copies: those are its figures.
        candidate = rollout_figures.window(self.db, record.endpoint_name, record.candidate, record.step_started_ms, scorers,
                                           shadow=rollout.shadowing(record.step))
        current = rollout_figures.window(self.db, record.endpoint_name, record.current, record.step_started_ms, scorers)
        return [judge(g, rollout, candidate, current) for g in rollout.gates], candidate, current

    async def _step(self, record: RolloutRecord, rollout: Rollout, decision: Decision, figures: dict) -> None:
        percent = rollout.stages[record.step + 1]
        await self._set_traffic(record, {record.candidate: percent, record.current: 100 - percent})
        entry = self._entry(decision, percent, figures, None)
        self._save(record.id, step=record.step + 1, step_started_ms=now_ms(), decisions=[*record.decisions, entry])
        self.sync_shadows()
        await self._announce(record, entry)

    async def _finish(self, record: RolloutRecord, state: str, decision: Decision, *, figures: dict | None = None,
                      by: Caller | None = None, move_traffic: bool = True) -> None:
        """End a rollout: all traffic to the candidate (PROMOTED) or back to the current version."""
        winner = record.candidate if state == PROMOTED else record.current
        if move_traffic:
            await self._set_traffic(record, {winner: 100})
        entry = self._entry(decision, 100 if state == PROMOTED else 0, figures, by)
        self._save(record.id, state=state, decisions=[*record.decisions, entry])
        self.sync_shadows()
        await self._announce(record, entry, state)

    def _entry(self, decision: Decision, percent: int, figures: dict | None, by: Caller | None) -> dict[str, Any]:
        return {"at_ms": now_ms(), "action": decision.action, "percent": percent, "reason": decision.reason,
                "by": by.name if by else "rollout controller", **({"figures": figures} if figures else {})}

    async def _set_traffic(self, record: RolloutRecord, shares: dict[str, int]) -> None:
        endpoint = self.endpoints.get(record.endpoint_name)
        agents = [e for e in endpoint.entities if not e.external_model and not e.pending]
        config = {"served_entities": [entity_config(e) for e in agents],
                  "traffic_config": {"routes": [{"served_model_name": e.name, "traffic_percentage": shares.get(e.name, 0)}
                                                for e in agents]}}
        await self.endpoints.update_config(record.endpoint_name, config)

    def _save(self, rollout_id: str, **values: Any) -> None:
        with self.db.session() as session:
            row = session.get(RolloutRecord, rollout_id)
            for key, value in values.items():
                setattr(row, key, value)

    async def _announce(self, record: RolloutRecord, entry: dict[str, Any], state: str = RUNNING) -> None:
        """Log the decision, tag it on the candidate's model version, tell the webhook."""
        log.info("rollout %s on %s: %s at %s%%: %s", record.id, record.endpoint_name, entry["action"], entry["percent"],
                 entry["reason"])
        await asyncio.to_thread(self._tag, record, f"{state} {entry['action']} at {entry['percent']}%: {entry['reason']}")
        url = record.spec.get("notify_url")
        if url and self.http is not None:
            event = {"event": f"rollout.{entry['action'].lower()}", "endpoint": record.endpoint_name, "rollout_id": record.id,
                     "candidate": record.candidate, "current": record.current, "state": state, **entry}
            asyncio.get_running_loop().create_task(self._notify(url, event))

    def _tag(self, record: RolloutRecord, text: str) -> None:
        endpoint = self.endpoints.find(record.endpoint_name)
        entity = next((e for e in endpoint.entities if e.name == record.candidate), None) if endpoint else None
        if entity is None or self.registry is None:
            return
        try:
            self.registry.set_version_tag(entity.entity_name, entity.entity_version, DECISION_TAG, text[:4900])
        except AgentwharfError as error:
            log.warning("could not tag %s v%s with the rollout decision: %s", entity.entity_name, entity.entity_version,
                        error.message)

    async def _notify(self, url: str, event: dict[str, Any]) -> None:
        for attempt in range(_NOTIFY_ATTEMPTS):
            try:
                answer = await self.http.post(url, json=event, headers={"X-Agentwharf-Event": event["event"]}, timeout=10)
                if answer.status_code < 300:
                    return
                why = f"HTTP {answer.status_code}"
            except httpx.HTTPError as error:
                why = str(error) or type(error).__name__
            log.warning("rollout webhook %s: %s (attempt %d of %d)", url, why, attempt + 1, _NOTIFY_ATTEMPTS)
            await asyncio.sleep(2 ** attempt)


def _start_reason(rollout: Rollout, current: str) -> str:
    then = f"steps {rollout.steps} then 100%" if rollout.steps else "then 100%"
    if rollout.shadow_percent:
        return (f"shadow: {rollout.shadow_percent}% of live requests copied to the candidate (its answers recorded, "
                f"never returned) beside {current}; when its gates hold, {then}")
    return f"canary at {rollout.steps[0]}% beside {current}; {then}"


def rollout_view(record: RolloutRecord, shadow: dict[str, int] | None = None) -> dict[str, Any]:
    """``shadow``: the gateway's counts of this endpoint's shadow copies since the platform started."""
    spec = record.spec
    rollout = rollout_from_json(spec)
    stages = rollout.stages
    return {
        "id": record.id,
        "endpoint_name": record.endpoint_name,
        "state": record.state,
        "candidate": record.candidate,
        "current": record.current,
        "step": record.step,
        "traffic_percentage": stages[record.step] if record.state == RUNNING and stages else
        (100 if record.state == PROMOTED else 0),
        "stage": stage_name(rollout, record.step) if record.state == RUNNING and stages else record.state.lower(),
        "shadowing": record.state == RUNNING and rollout.shadowing(record.step),
        **({"shadow": shadow} if shadow is not None else {}),
        "spec": spec,
        "window": record.last_figures,
        "decisions": record.decisions,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
