"""What ``databricks.agents`` asks around a deployment, besides the serving-endpoint REST:

    POST  /api/2.0/agents/deployments                 "record" a deployment it has just served
    GET   /api/2.0/agents/deployments/{model}/artifacts   review artifacts (none)
    PATCH /api/2.0/serving-endpoints/{name}/tags          add_tags / delete_tags
    PATCH /api/2.0/serving-endpoints/{name}/description
    GET   /api/2.0/managed-evals/monitors/{name}          404: no legacy monitor
    GET   /api/2.1/unity-catalog/tables/{c}.{s}.{m}_payload/exists   false: names its inference table

There is no deployment table: databricks-agents creates the endpoint with the serving-endpoint
REST (the same ``aw_endpoints`` rows ``agentwharf.agents`` writes), and a deployment is read off
its served entities. So the record call checks that the endpoint really serves the version and
answers the deployment as ``GET /api/2.0/agents/deployments`` shows it; and the record clean-up
that follows a ``delete_deployment`` finds it already gone (control/routes.py).
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from agentwharf.control.endpoints import parse_tags
from agentwharf.control.routes import Body, CallerDep, Control, base_url
from agentwharf.control.views import deployment_view
from agentwharf.databricks_compat.unsupported import unity_catalog_tables
from agentwharf.errors import InvalidParameter, NotFound

router = APIRouter()


@router.post("/api/2.0/agents/deployments")
def record_deployment(control: Control, request: Request, body: Body, caller: CallerDep) -> dict:
    """Answers ``{"deployed_chain": ...}`` for a version the endpoint serves (pending included:
    the client records right after creating the endpoint, before the version answers)."""
    model, version, endpoint = body.get("model_name"), body.get("model_version"), body.get("endpoint_name")
    if not all(isinstance(v, (str, int)) and str(v) for v in (model, version, endpoint)):
        raise InvalidParameter("model_name, model_version and endpoint_name are required")
    pairs = [(ep, e) for ep, e in control.deployments.find(str(model), str(version)) if ep.name == endpoint]
    pairs = control.deployments.visible(pairs, caller)
    if not pairs:
        raise NotFound(f"Endpoint {endpoint!r} does not serve version {version} of {model}; "
                       "create or update the serving endpoint first")
    return {"deployed_chain": deployment_view(*pairs[0], base_url(request))}


@router.get("/api/2.0/agents/deployments/{model_name}/artifacts")
def review_artifacts(model_name: str) -> dict:
    """Review artifacts (runs whose traces were sent for review) are the legacy review app's;
    agentwharf keeps none, so ``set_permissions`` changes endpoint permissions only."""
    return {"artifacts": []}


@router.patch("/api/2.0/serving-endpoints/{name}/tags")
async def patch_tags(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    delete = body.get("delete_tags") or []
    if not isinstance(delete, list):
        raise InvalidParameter("delete_tags must be a list of tag keys")
    endpoint = await control.endpoints.update_metadata(name, add_tags=parse_tags(body.get("add_tags")), delete_tags=delete,
                                                       caller=caller)
    return {"tags": [{"key": k, "value": v} for k, v in sorted(endpoint.tags.items())]}


@router.patch("/api/2.0/serving-endpoints/{name}/description")
async def patch_description(name: str, control: Control, body: Body, caller: CallerDep) -> dict:
    endpoint = await control.endpoints.update_metadata(name, description=body.get("description", ""), caller=caller)
    return {"name": endpoint.name, "description": endpoint.description or ""}


@router.get("/api/2.0/managed-evals/monitors/{name}")
def legacy_monitor(name: str, control: Control, caller: CallerDep) -> dict:
    """Legacy agent monitors are Databricks'; deploy takes the 404 as "none" and moves on."""
    raise NotFound(f"No monitor for endpoint {name!r}: agentwharf records every request of every endpoint as an "
                   "MLflow trace in the endpoint's experiment instead")


@router.get("/api/2.1/unity-catalog/tables/{full_name}/exists")
def table_exists(full_name: str) -> dict:
    """Only the probe deploy makes to name an endpoint's inference table: agentwharf keeps its
    own inference table (GET /api/2.0/serving-endpoints/{name}/inference-table), and no Unity
    Catalog table exists here. Any other table call is refused (unsupported.py)."""
    if not full_name.endswith("_payload") or len(full_name.split(".")) != 3:
        raise unity_catalog_tables(f"tables/{full_name}/exists")
    return {"table_exists": False}
