"""REST of the control plane, in the paths and shapes Databricks' clients use:

    GET/POST  /api/2.0/serving-endpoints
    GET/DELETE /api/2.0/serving-endpoints/{name}
    PUT       /api/2.0/serving-endpoints/{name}/config
    PUT/GET   /api/2.0/serving-endpoints/{name}/ai-gateway   (rate limits, usage, guardrails, fallbacks)
    GET       /api/2.0/serving-endpoints/{name}/inference-table
    GET       /api/2.0/agents/deployments[/{model}[/versions/{version}]]
    POST      /api/2.0/agents/deployments:deploy      (agentwharf.agents.deploy)
    DELETE    /api/2.0/agents/deployments/{model}[/versions/{version}]
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request

from agentwharf.auth.caller import Caller
from agentwharf.auth.levels import PermissionLevel
from agentwharf.control import inference
from agentwharf.control.deployments import DeploymentService
from agentwharf.control.endpoints import EndpointService
from agentwharf.control.views import deployment_view, endpoint_view
from agentwharf.errors import InvalidParameter, NotFound, NotImplementedByPlatform, UnsupportedMediaType
from agentwharf.serving.endpoint_metrics import EndpointMetrics
from agentwharf.serving.routing import worker_key
from agentwharf.serving.supervisor import Supervisor
from agentwharf.store.database import Database


class ControlState:
    """What the routes need, hung on ``app.state.control`` by the platform."""

    def __init__(self, endpoints: EndpointService, deployments: DeploymentService, supervisor: Supervisor, db: Database,
                 identities=None, gatekeeper=None, registry=None, metrics: EndpointMetrics | None = None,
                 worker_concurrency: int = 1, rollouts=None, tracking_store=None):
        self.identities = identities
        #: RolloutService (quality-gated rollouts); None where rollouts are not run.
        self.rollouts = rollouts
        #: () -> MLflow's SQL store of the platform's database (review rules' queues and filters).
        self.tracking_store = tracking_store
        #: Per-endpoint request metrics (export_metrics) and the requests each worker process runs at once.
        self.metrics = metrics or EndpointMetrics()
        self.worker_concurrency = worker_concurrency
        self.gatekeeper = gatekeeper
        self.registry = registry
        self.db = db
        self.endpoints = endpoints
        self.deployments = deployments
        self.supervisor = supervisor

    def level_of(self, caller: Caller | None, endpoint_name: str) -> PermissionLevel:
        """The caller's permission level on an endpoint (the platform itself manages all)."""
        if caller is None or self.gatekeeper is None:
            return PermissionLevel.CAN_MANAGE
        return self.gatekeeper.endpoint_level(caller, endpoint_name)

    def view(self, endpoint, caller: Caller | None, url: str) -> dict:
        """The endpoint as this caller may see it."""
        return endpoint_view(endpoint, self.state_of, url, self.level_of(caller, endpoint.name))

    def state_of(self, endpoint_name: str, entity_name: str) -> tuple[str, str | None]:
        version = self.supervisor.versions.get(worker_key(endpoint_name, entity_name))
        return (version.state, version.error or version.detail) if version else ("STOPPED", None)


def _control(request: Request) -> ControlState:
    return request.app.state.control


Control = Annotated[ControlState, Depends(_control)]


def _caller(request: Request) -> Caller | None:
    """Set by the platform's front door (``Platform._admit``) on every authenticated request."""
    return request.scope.get("agentwharf.caller")


CallerDep = Annotated[Caller | None, Depends(_caller)]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


async def json_body(request: Request) -> dict[str, Any]:
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in ("application/json", "") and not media.endswith("+json"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, got {media!r}")
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidParameter(f"Malformed JSON in request body: {error}") from None
    if not isinstance(body, dict):
        raise InvalidParameter("Request body must be a JSON object")
    return body


Body = Annotated[dict[str, Any], Depends(json_body)]
router = APIRouter()


@router.get("/api/2.0/serving-endpoints")
def list_endpoints(control: Control, request: Request, caller: CallerDep) -> dict:
    url = base_url(request)
    return {"endpoints": [control.view(e, caller, url) for e in control.endpoints.list(caller)]}


@router.post("/api/2.0/serving-endpoints")
async def create_endpoint(control: Control, request: Request, body: Body, caller: CallerDep) -> dict:
    if body.get("route_optimized"):
        raise NotImplementedByPlatform("route_optimized endpoints are a Databricks feature that agentwharf does not serve")
    endpoint = await control.endpoints.create(
        body.get("name"), body.get("config"), tags=body.get("tags"), description=body.get("description"), caller=caller,
        ai_gateway=body.get("ai_gateway"),
    )
    return control.view(endpoint, caller, base_url(request))


@router.get("/api/2.0/serving-endpoints/{name}")
def get_endpoint(name: str, control: Control, request: Request, caller: CallerDep) -> dict:
    endpoint = control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_VIEW)
    return control.view(endpoint, caller, base_url(request))


def _require(control: ControlState, caller: Caller | None, name: str, level: PermissionLevel) -> None:
    if caller is not None and control.gatekeeper is not None:
        control.gatekeeper.require_endpoint(caller, name, level)


@router.delete("/api/2.0/serving-endpoints/{name}")
async def delete_endpoint(name: str, control: Control, caller: CallerDep) -> dict:
    await control.endpoints.delete(name, caller)
    return {}


@router.put("/api/2.0/serving-endpoints/{name}/config")
async def update_config(name: str, control: Control, request: Request, body: Body, caller: CallerDep) -> dict:
    endpoint = await control.endpoints.update_config(name, body, caller=caller)
    return control.view(endpoint, caller, base_url(request))


@router.put("/api/2.0/serving-endpoints/{name}/ai-gateway")
async def put_ai_gateway(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    """Replace the endpoint's AI gateway settings; answers them as stored. Needs CAN_MANAGE."""
    endpoint = await control.endpoints.put_ai_gateway(name, body, caller)
    return endpoint.ai_gateway or {}


@router.get("/api/2.0/serving-endpoints/{name}/ai-gateway")
def get_ai_gateway(name: str, control: Control, caller: CallerDep) -> dict:
    endpoint = control.endpoints.get(name)
    _require(control, caller, name, PermissionLevel.CAN_VIEW)
    return endpoint.ai_gateway or {}


@router.get("/api/2.0/serving-endpoints/{name}/inference-table")
def inference_table(name: str, control: Control, request: Request, caller: CallerDep) -> dict:
    """Rows of the endpoint's inference table. Query: since, until (epoch ms or ISO 8601),
    status (200, 5xx or error), client_request_id, max_results, page_token. Needs CAN_REVIEW."""
    _require(control, caller, name, PermissionLevel.CAN_REVIEW)
    params = request.query_params
    answer = inference.query(control.db, name, since=params.get("since"), until=params.get("until"),
                             status=params.get("status"), page_token=params.get("page_token"),
                             max_results=params.get("max_results"), client_request_id=params.get("client_request_id"))
    if not answer["rows"] and control.endpoints.find(name) is None and inference.count(control.db, name) == 0:
        control.endpoints.get(name)  # raises the usual 404 for an endpoint that never existed
    return answer


@router.get("/api/2.0/agents/deployments")
def list_deployments(control: Control, request: Request, caller: CallerDep) -> dict:
    url = base_url(request)
    pairs = control.deployments.visible(control.deployments.all(), caller)
    return {"chain_deployments": [deployment_view(ep, e, url) for ep, e in pairs]}


@router.get("/api/2.0/agents/deployments/{model_name}")
def get_deployments(model_name: str, control: Control, request: Request, caller: CallerDep) -> dict:
    url = base_url(request)
    pairs = control.deployments.visible(control.deployments.find(model_name), caller)
    return {"chain_deployments": [deployment_view(ep, e, url) for ep, e in pairs]}


@router.get("/api/2.0/agents/deployments/{model_name}/versions/{version}")
def get_version_deployments(model_name: str, version: str, control: Control, request: Request, caller: CallerDep) -> dict:
    url = base_url(request)
    pairs = control.deployments.visible(control.deployments.find(model_name, version), caller)
    return {"chain_deployments": [deployment_view(ep, e, url) for ep, e in pairs]}


@router.post("/api/2.0/agents/deployments:deploy")
async def deploy(control: Control, request: Request, body: Body, caller: CallerDep) -> dict:
    endpoint, entity_name = await control.deployments.deploy(
        body.get("model_name"),
        body.get("model_version"),
        scale_to_zero=body.get("scale_to_zero", False),
        environment_vars=body.get("environment_vars"),
        tags=body.get("tags"),
        workload_size=body.get("workload_size", "Small"),
        endpoint_name=body.get("endpoint_name"),
        env_manager=body.get("env_manager"),
        description=body.get("description"),
        rollout=body.get("rollout"),
        caller=caller,
    )
    url = base_url(request)
    entity = next(e for e in endpoint.entities if e.name == entity_name)
    return {"deployed_chain": deployment_view(endpoint, entity, url), "endpoint": control.view(endpoint, caller, url)}


async def _delete_deployment(control: ControlState, request: Request, model_name: str, version: str | None,
                             caller: Caller | None) -> dict:
    try:
        await control.deployments.delete(model_name, version, caller=caller)
    except NotFound:
        # databricks-agents changes the endpoint itself first, then sends this DELETE (with the
        # model named in a JSON body) to drop its deployment record. Deployments are read off
        # the endpoints, so that record is already gone: done. agentwharf's client sends no
        # body and gets the 404 for a deployment that never was.
        if (await json_body(request)).get("model_name") != model_name:
            raise
    return {}


@router.delete("/api/2.0/agents/deployments/{model_name}")
async def delete_deployments(model_name: str, control: Control, request: Request, caller: CallerDep) -> dict:
    return await _delete_deployment(control, request, model_name, None, caller)


@router.delete("/api/2.0/agents/deployments/{model_name}/versions/{version}")
async def delete_version_deployment(model_name: str, version: str, control: Control, request: Request, caller: CallerDep) -> dict:
    return await _delete_deployment(control, request, model_name, version, caller)
