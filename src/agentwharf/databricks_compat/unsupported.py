"""Databricks features agentwharf does not serve, refused with a JSON error that names them
(501 ``NOT_IMPLEMENTED``) instead of a bare 404, a 500 or a silent success:

    /api/2.1/unity-catalog/...   Unity Catalog tables, volumes, functions, catalogs, native UC models
                                 (the inference-table probe excepted, see agents_records)
    /api/2.0/apps...             Databricks Apps (and ``model="apps/..."`` on the OpenAI route, in the gateway)
    /oidc/...                    OAuth: answered before authentication, since an OAuth client has
                                 no bearer token yet (see ``OAUTH_PREFIX``)
    /api/2.0/serving-endpoints/{name}/rate-limits                the legacy rate limits (put_ai_gateway has them)
    /api/2.0/serving-endpoints/{name}/notifications, /telemetry-config, /openapi
    /api/2.0/serving-endpoints/pt[/{name}/config]                 provisioned-throughput endpoints
    /api/2.0/external-function   HTTP requests through Unity Catalog connections

Route-optimized endpoints are refused where they are asked for (``POST /api/2.0/serving-endpoints``).
"""

from __future__ import annotations

from fastapi import APIRouter

from agentwharf.errors import NotImplementedByPlatform

OAUTH_PREFIX = "/oidc/"
#: The body of every /oidc/ answer (Platform answers it before authentication).
OAUTH_NOT_IMPLEMENTED = NotImplementedByPlatform(
    "OAuth is not supported by agentwharf: authenticate with a personal access token "
    "(DATABRICKS_TOKEN, Authorization: Bearer <token>)")
_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
router = APIRouter()


def not_implemented(feature: str, hint: str) -> NotImplementedByPlatform:
    """``feature`` names what is not served, ``hint`` what to do instead."""
    return NotImplementedByPlatform(f"Not supported by agentwharf: {feature}; {hint}")


def unity_catalog_tables(what: str) -> NotImplementedByPlatform:
    return not_implemented(f"Unity Catalog tables and other UC objects ({what})",
                           "agentwharf keeps each endpoint's inference table itself: "
                           "GET /api/2.0/serving-endpoints/{name}/inference-table")


@router.api_route("/api/2.1/unity-catalog/{rest:path}", methods=_ALL, include_in_schema=False)
def unity_catalog(rest: str) -> None:
    raise unity_catalog_tables(rest)


@router.api_route("/api/2.0/apps{rest:path}", methods=_ALL, include_in_schema=False)
def apps(rest: str) -> None:
    raise not_implemented("Databricks Apps", "deploy agents as serving endpoints (agents.deploy)")


_ENDPOINT = "/api/2.0/serving-endpoints/{name}"


@router.put(_ENDPOINT + "/rate-limits")
def rate_limits(name: str) -> None:
    raise not_implemented("the legacy rate limits of serving endpoints (put)",
                          "set rate_limits with put_ai_gateway (PUT /api/2.0/serving-endpoints/{name}/ai-gateway)")


@router.patch(_ENDPOINT + "/notifications")
def notifications(name: str) -> None:
    raise not_implemented("email notifications of serving endpoints (update_notifications)",
                          "watch GET /api/2.0/serving-endpoints/{name} or its metrics instead")


@router.patch(_ENDPOINT + "/telemetry-config")
def telemetry_config(name: str) -> None:
    raise not_implemented("telemetry configuration of serving endpoints (patch_telemetry_config)",
                          "every request is already traced to the endpoint's MLflow experiment")


@router.get(_ENDPOINT + "/openapi")
def openapi(name: str) -> None:
    raise not_implemented("OpenAPI schemas of serving endpoints (get_open_api)",
                          "agent endpoints take a Responses request: POST /serving-endpoints/{name}/invocations "
                          '{"input": [{"role": "user", "content": "..."}]}')


@router.post("/api/2.0/serving-endpoints/pt")
def provisioned_throughput() -> None:
    raise _provisioned_throughput()


@router.put("/api/2.0/serving-endpoints/pt/{name}/config")
def provisioned_throughput_config(name: str) -> None:
    raise _provisioned_throughput()


def _provisioned_throughput() -> NotImplementedByPlatform:
    return not_implemented("provisioned-throughput endpoints (foundation models)",
                           "create an agent endpoint with POST /api/2.0/serving-endpoints")


@router.post("/api/2.0/external-function")
def external_function() -> None:
    raise not_implemented("HTTP requests through Unity Catalog connections (serving_endpoints.http_request)",
                          "call the service directly, or declare it as a resource of a deployed agent")
