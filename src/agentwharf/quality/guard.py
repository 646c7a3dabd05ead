"""Who may register, start, stop or delete a scorer on a serving endpoint's experiment.

``Scorer.register/start/update/stop`` and ``delete_scorer`` are MLflow's REST calls
(``/api/3.0/mlflow/scorers/...``), which MLflow's own permissions allow to anyone who may edit
the experiment; for an endpoint's experiment that includes its reviewers (CAN_REVIEW is EDIT
there). A scorer on an endpoint runs on every live trace, its judges on the platform's LLM
endpoints and its code on the platform's machines, so the platform asks more, in front of MLflow:

- CAN_MANAGE on the endpoint whose experiment it is;
- for a scorer whose judge names a platform endpoint (``gateway:/x``, ``databricks:/x``,
  ``endpoints:/x``), CAN_QUERY on that endpoint: online scoring will call it for them.

Anything else passes through to MLflow unchanged (its own checks still apply). One refusal of
MLflow's is lifted: starting a scorer that is not a ``gateway:/`` judge (``online_config``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

import orjson

from agentwharf.asgi import read_body, send_error, send_json
from agentwharf.auth.levels import PermissionLevel
from agentwharf.errors import AgentwharfError, InvalidParameter
from agentwharf.quality import online_config
from agentwharf.quality.scorers import judge_models

_WRITES = {f"/{api}/3.0/mlflow/scorers/{what}" for api in ("api", "ajax-api") for what in ("register", "online-config", "delete")}
_MAX_BODY = 8 * 1024 * 1024
#: Model URI schemes whose name is a serving endpoint of the platform.
_ENDPOINT_SCHEMES = ("gateway", "databricks", "endpoints")


def endpoint_of_model(model: str) -> str | None:
    """``gateway:/judge`` -> ``judge`` (the same for ``databricks:/`` and ``endpoints:/``)."""
    scheme, sep, rest = model.partition(":/")
    if not sep or scheme not in _ENDPOINT_SCHEMES:
        return None
    return rest.strip("/") or None


class ScorerGuard:
    """Wraps the MLflow proxy (an ASGI app)."""

    def __init__(self, proxy, endpoint_of_experiment: Callable[[str], str | None], gatekeeper_of: Callable[[], object],
                 is_endpoint: Callable[[str], bool], body_timeout: float = 60.0, store_of: Callable[[], object] | None = None):
        self.proxy = proxy
        #: () -> an MLflow SQL store of the platform's database (``online_config``).
        self.store_of = store_of
        #: experiment id -> the serving endpoint whose experiment it is (a database read).
        self.endpoint_of_experiment = endpoint_of_experiment
        self.gatekeeper_of = gatekeeper_of
        self.is_endpoint = is_endpoint
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] == "GET" or scope["path"] not in _WRITES:
            await self.proxy(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, _MAX_BODY, self.body_timeout)
            await self._check(scope, body)
        except ConnectionAbortedError:
            return
        except AgentwharfError as error:
            await send_error(send, error)
            return
        if scope["path"].endswith("/online-config") and self.store_of is not None:
            await self._online_config(scope, body, receive, send)
            return
        await self.proxy(scope, _replay(body, receive), send)

    async def _online_config(self, scope, body: bytes, receive, send) -> None:
        """MLflow first (its permissions and validation); if it refuses only because the scorer
        is not a gateway judge, the platform stores the configuration (see ``online_config``)."""
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.proxy(scope, _replay(body, receive), capture)
        answer = b"".join(chunks)
        if start.get("status") == 400 and online_config.NOT_GATEWAY.encode() in answer:
            fields = _fields(scope, body)
            try:
                config = await asyncio.to_thread(online_config.upsert, self.store_of(), str(fields["experiment_id"]),
                                                 str(fields["name"]), float(fields["sample_rate"]), fields.get("filter_string"))
            except AgentwharfError as error:
                await send_error(send, error)
                return
            await send_json(send, 200, orjson.dumps({"config": config}))
            return
        await send({"type": "http.response.start", "status": start.get("status", 502), "headers": start.get("headers", [])})
        await send({"type": "http.response.body", "body": answer})

    async def close(self) -> None:
        await self.proxy.close()

    async def _check(self, scope, body: bytes) -> None:
        caller, gatekeeper = scope.get("agentwharf.caller"), self.gatekeeper_of()
        if caller is None or gatekeeper is None:
            return
        fields = _fields(scope, body)
        experiment_id = fields.get("experiment_id")
        if not isinstance(experiment_id, str) or not experiment_id:
            return  # MLflow answers its own 400
        endpoint = await asyncio.to_thread(self.endpoint_of_experiment, experiment_id)
        if endpoint is not None:
            try:
                gatekeeper.require_endpoint(caller, endpoint, PermissionLevel.CAN_MANAGE)
            except AgentwharfError as error:
                error.message = (f"Scorers on the experiment of serving endpoint {endpoint!r} run on its live traffic: "
                                 f"{error.message}")
                raise
        serialized = fields.get("serialized_scorer")
        if isinstance(serialized, str):
            for model in judge_models(serialized):
                name = endpoint_of_model(model)
                if name is not None and self.is_endpoint(name):
                    try:
                        gatekeeper.require_endpoint(caller, name, PermissionLevel.CAN_QUERY)
                    except AgentwharfError as error:
                        error.message = (f"The scorer's judge calls endpoint {name!r} ({model}), which online scoring "
                                         f"would call on your behalf: {error.message}")
                        raise


def _fields(scope, body: bytes) -> dict:
    fields: dict = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
    if body.strip():
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidParameter("Malformed JSON in request body") from None
        if isinstance(data, dict):
            fields.update(data)
    return fields


def _replay(body: bytes, receive) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
