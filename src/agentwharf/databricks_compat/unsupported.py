"""Databricks features agentwharf does not serve, refused with a JSON error that names them
(501 ``NOT_IMPLEMENTED``) instead of a bare 404, a 500 or a silent success:

    /api/2.1/unity-catalog/...   Unity Catalog tables, volumes, functions, catalogs, native UC models
                                 (the inference-table probe excepted, see agents_records)
    /api/2.0/apps...             Databricks Apps (and ``model="apps/..."`` on the OpenAI route, in the gateway)
    /oidc/...                    OAuth: answered before authentication, since an OAuth client has
                                 no bearer token yet (see ``OAUTH_PREFIX``)

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
