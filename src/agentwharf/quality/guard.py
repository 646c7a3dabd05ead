"""Who may see and change the scorers of a serving endpoint's experiment.

``Scorer.register/start/update/stop``, ``list_scorers``, ``get_scorer`` and ``delete_scorer``
are MLflow's REST calls (``/api/3.0/mlflow/scorers/...``). MLflow's permissions would let anyone
who may edit the experiment register one (an endpoint's reviewers: CAN_REVIEW is EDIT there),
and would then let only whoever registered a scorer see or stop it (each scorer is a resource of
its own in MLflow's auth, granted to its creator). A scorer on an endpoint runs on every live
trace, its judges on the platform's LLM endpoints and its code on the platform's machines, and
an endpoint's managers are a team; so on an endpoint's experiment the platform decides:

- registering, starting, updating, stopping or deleting: CAN_MANAGE on the endpoint;
- reading them (``list_scorers``, ``get_scorer``, their versions and sampling): CAN_REVIEW
  (whoever sees the endpoint's traces sees what scores them);
- a scorer whose judge names a platform endpoint (``gateway:/x``, ``databricks:/x``,
  ``endpoints:/x``) also needs CAN_QUERY on that endpoint: online scoring calls it for them.

Once allowed, the call reaches MLflow as the platform (MLflow's admin), so every manager of the
endpoint manages every scorer on it. Scorers of other experiments (a development experiment)
pass through unchanged, MLflow's own permissions deciding. One refusal of MLflow's is lifted:
starting a scorer that is not a ``gateway:/`` judge (``online_config``).
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

_API = ("api", "ajax-api")
_WRITES = {f"/{api}/3.0/mlflow/scorers/{what}" for api in _API for what in ("register", "online-config", "delete")}
_READS = {f"/{api}/3.0/mlflow/scorers/{what}" for api in _API for what in ("list", "versions", "get", "online-configs")}
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
        #: () -> an MLflow SQL store of the platform's database (``online_config``, scorer ids).
        self.store_of = store_of
        #: experiment id -> the serving endpoint whose experiment it is (a database read).
        self.endpoint_of_experiment = endpoint_of_experiment
        self.gatekeeper_of = gatekeeper_of
        self.is_endpoint = is_endpoint
        self.body_timeout = body_timeout

    async def __call__(self, scope, receive, send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if path not in _WRITES and path not in _READS:
            await self.proxy(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, _MAX_BODY, self.body_timeout)
            fields = _fields(scope, body)
            decided = await self._check(scope, fields, write=path in _WRITES)
        except ConnectionAbortedError:
            return
        except AgentwharfError as error:
            await send_error(send, error)
            return
        if decided:
            # The platform has decided: MLflow hears the platform itself (its admin).
            scope = {**scope, "agentwharf.caller": None}
        if path.endswith("/online-config") and self.store_of is not None:
            await self._online_config(scope, body, fields, receive, send)
            return
        await self.proxy(scope, _replay(body, receive), send)

    async def _online_config(self, scope, body: bytes, fields: dict, receive, send) -> None:
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

    async def _check(self, scope, fields: dict, write: bool) -> bool:
        """Whether the platform decided (the call is about endpoints' experiments only).

        Raises:
            PermissionDenied: the caller lacks the level it takes on one of those endpoints.
        """
        caller, gatekeeper = scope.get("agentwharf.caller"), self.gatekeeper_of()
        if caller is None or gatekeeper is None:
            return False
        experiments = await asyncio.to_thread(self._experiments, fields)
        if not experiments:
            return False  # MLflow answers its own 400 or 404
        endpoints = [await asyncio.to_thread(self.endpoint_of_experiment, e) for e in experiments]
        if any(endpoint is None for endpoint in endpoints):
            return False  # not (only) endpoints' experiments: MLflow decides
        needed = PermissionLevel.CAN_MANAGE if write else PermissionLevel.CAN_REVIEW
        for endpoint in sorted(set(endpoints)):
            try:
                gatekeeper.require_endpoint(caller, endpoint, needed)
            except AgentwharfError as error:
                error.message = (f"Scorers on the experiment of serving endpoint {endpoint!r} run on its live traffic: "
                                 f"{error.message}")
                raise
        if write and isinstance(fields.get("serialized_scorer"), str):
            self._check_judges(caller, gatekeeper, fields["serialized_scorer"])
        return True

    def _check_judges(self, caller, gatekeeper, serialized: str) -> None:
        for model in judge_models(serialized):
            name = endpoint_of_model(model)
            if name is not None and self.is_endpoint(name):
                try:
                    gatekeeper.require_endpoint(caller, name, PermissionLevel.CAN_QUERY)
                except AgentwharfError as error:
                    error.message = (f"The scorer's judge calls endpoint {name!r} ({model}), which online scoring "
                                     f"would call on your behalf: {error.message}")
                    raise

    def _experiments(self, fields: dict) -> list[str]:
        """The experiments a call is about: its ``experiment_id``, or its scorers' (by id)."""
        experiment_id = fields.get("experiment_id")
        if isinstance(experiment_id, str) and experiment_id:
            return [experiment_id]
        ids = fields.get("scorer_ids")
        if not ids or self.store_of is None:
            return []
        from mlflow.store.tracking.dbmodels.models import SqlScorer

        ids = [ids] if isinstance(ids, str) else [str(i) for i in ids]
        with self.store_of().ManagedSessionMaker() as session:
            found = {str(e) for (e,) in session.query(SqlScorer.experiment_id).filter(SqlScorer.scorer_id.in_(ids)).distinct()}
        return sorted(found)


def _fields(scope, body: bytes) -> dict:
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    fields: dict = {k: (v if k == "scorer_ids" else v[0]) for k, v in query.items()}
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
