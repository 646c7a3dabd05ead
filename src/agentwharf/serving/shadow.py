"""Shadow traffic: a copy of sampled live requests sent to a rollout's candidate, whose answer
is recorded (trace and inference row, marked ``shadow_of`` the live request's trace) and never
returned to anyone.

The copy leaves after the live answer is on its way, as a task of its own: the caller's latency
never includes the shadow's. Copies are bounded per endpoint (``max_in_flight``); past the bound,
or while the trace spool is short of room, a copy is dropped and counted rather than queued, so
a slow candidate cannot pile up work or memory. A copy passes no rate limit (it is not the
caller's request) and carries no on-behalf-of token: the candidate cannot act as the user for
an answer nobody asked of it.

The rollout controller sets the targets (``set_targets``); the gateway offers every request the
traffic split answered (``offer``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass

from agentwharf.serving.routing import EndpointRoutes
from agentwharf.serving.supervisor import Supervisor
from agentwharf.serving.worker_client import Reply, WorkerGone
from agentwharf.tracing import record as trace_record
from agentwharf.tracing.ids import new_request_id
from agentwharf.tracing.recorder import Recorder, header

log = logging.getLogger("agentwharf.shadow")


@dataclass(frozen=True)
class ShadowTarget:
    """Where an endpoint's copies go: the candidate's served entity and the share copied."""

    entity: str
    percent: int


@dataclass(frozen=True)
class LiveRequest:
    """What a copy is made of: the live request as the gateway answered it."""

    endpoint: EndpointRoutes
    #: The supervisor key that answered it (never copied to itself).
    key: str
    body: bytes
    route: str
    caller: str | None
    client_request_id: str | None
    #: Tokens the copy's record must not keep (the caller's own, echoed by a model, say).
    secrets: tuple[bytes, ...]


class ShadowTraffic:
    def __init__(self, supervisor: Supervisor, recorder: Recorder, request_timeout: float, max_in_flight: int = 16):
        self.supervisor = supervisor
        self.recorder = recorder
        self.request_timeout = request_timeout
        self.max_in_flight = max_in_flight
        self.targets: dict[str, ShadowTarget] = {}
        self.in_flight: Counter[str] = Counter()
        #: Per endpoint since the platform started: copies recorded, dropped at the bound (or
        #: for want of spool room), and failed on the way (the worker gone, a timeout).
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._tasks: set[asyncio.Task] = set()

    def set_targets(self, targets: dict[str, ShadowTarget]) -> None:
        """Every endpoint's target at once (the running shadow rollouts); others stop copying."""
        self.targets = dict(targets)

    def figures(self, endpoint: str) -> dict[str, int]:
        return {"in_flight": self.in_flight[endpoint], "sent": self.sent[endpoint], "dropped": self.dropped[endpoint],
                "failed": self.failed[endpoint]}

    def offer(self, live: LiveRequest, record: bytes | None) -> None:
        """Copy ``live`` to its endpoint's candidate if it is sampled. Returns at once."""
        target = self.targets.get(live.endpoint.name)
        if target is None or record is None:
            return
        key = live.endpoint.entities.get(target.entity)
        if key is None or key == live.key or random.random() * 100 >= target.percent:
            return
        name = live.endpoint.name
        if self.in_flight[name] >= self.max_in_flight or not self.recorder.has_room():
            self.dropped[name] += 1
            return
        self.in_flight[name] += 1
        task = asyncio.get_running_loop().create_task(self._copy(live, key, trace_record.trace_id_of(record)),
                                                      name=f"shadow-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _copy(self, live: LiveRequest, key: str, shadow_of: str | None) -> None:
        name = live.endpoint.name
        try:
            await asyncio.wait_for(self._send(live, key, shadow_of), self.request_timeout)
            self.sent[name] += 1
        except Exception as error:  # a copy's failure is the candidate's figure, never the caller's error
            self.failed[name] += 1
            log.warning("shadow copy of a request to %s for %s failed: %s", name, key, str(error) or type(error).__name__)
        finally:
            self.in_flight[name] -= 1

    async def _send(self, live: LiveRequest, key: str, shadow_of: str | None) -> None:
        started, start_ns, request_id = time.perf_counter(), time.time_ns(), new_request_id()
        connection = await self.supervisor.acquire(key)
        entity = key.partition("/")[2]
        # No user_token: an on-behalf-of credential is never minted for a shadow.
        meta = {"route": live.route, "endpoint": live.endpoint.name, "entity": entity, "request_id": request_id,
                "model": live.endpoint.name}
        connection.in_flight += 1
        reply: Reply | None = None
        try:
            reply = await connection.request(meta, live.body, self.request_timeout)
            status = await _drained(reply)
        except asyncio.CancelledError:
            if reply is not None and reply.stream:
                connection.cancel(reply.stream_id, forget=True)
            raise
        except WorkerGone:
            status = 503
        finally:
            connection.in_flight -= 1
        record = (reply.record if reply is not None else None) or Recorder.gateway_record(
            live.endpoint.name, live.body, "the candidate's worker sent no record for this shadow copy", start_ns)
        secrets = live.secrets + ((token.encode(),) if (token := live.endpoint.system_tokens.get(key)) else ())
        for secret in secrets:
            record = record.replace(secret, b"[REDACTED]")
        await self.recorder.record(header(
            request_id=request_id, client_request_id=live.client_request_id, endpoint=live.endpoint.name,
            experiment_id=live.endpoint.experiment_id, entity=entity, model=live.endpoint.models.get(key),
            status_code=status, started=started, caller=live.caller, route=live.route, stream=reply is not None and reply.stream,
            shadow_of=shadow_of), record)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _drained(reply: Reply) -> int:
    """The status of a shadow's answer; a stream is read to its end (its events go nowhere)."""
    if not reply.stream:
        return reply.status
    async for event, error in reply.events():
        if not event:
            return 500 if error else 200
    return 200
