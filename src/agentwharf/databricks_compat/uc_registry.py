"""The Unity Catalog model registry that MLflow's ``databricks-uc`` client speaks, over MLflow's
own registry (no second copy of anything):

    /api/2.0/mlflow/unity-catalog/registered-models/create|get|search|update|delete|set-tag|delete-tag|alias
    /api/2.0/mlflow/unity-catalog/model-versions/create|finalize|get|search|update|delete|set-tag|delete-tag
    /api/2.0/mlflow/unity-catalog/model-versions/get-download-uri|emit-lineage
    /api/2.0/mlflow/unity-catalog/registered-models:is-databricks-sdk-models-artifact-repository-enabled

These are the calls of MLflow 3.17's ``UcModelRegistryStore`` (``mlflow/store/_unity_catalog/
registry/rest_store.py``; paths from ``UcModelRegistryService``). Each becomes the matching call
of MLflow's REST API made *as the caller*, so MLflow's permissions decide and a model's creator
gets MANAGE on it, as with MLflow's own client. Answers are re-shaped into the UC messages
(``databricks_uc_registry_messages.proto``): MLflow's version aliases are names, UC's are
``{alias, version}``; run and model sources are shown as ``dbfs:/databricks/mlflow-tracking/``.

Model files are not uploaded here: the client writes them through the Files API to
``/Models/<c>/<s>/<m>/<v>/``, which is the version's MLflow storage (see files_api).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from agentwharf.auth.caller import Caller
from agentwharf.control.routes import json_body
from agentwharf.databricks_compat.mlflow_calls import MlflowCalls, mlflow_calls, require_caller
from agentwharf.databricks_compat.uris import to_databricks_uri, to_mlflow_uri
from agentwharf.errors import InvalidParameter, NotImplementedByPlatform

PREFIX = "/api/2.0/mlflow/unity-catalog"
_MLFLOW = "/api/2.0/mlflow"
router = APIRouter()

Mlflow = Annotated[MlflowCalls, Depends(mlflow_calls)]
Who = Annotated[Caller, Depends(require_caller)]


async def _args(request: Request) -> dict[str, Any]:
    """GETs carry their fields in the query string, the others in a JSON body."""
    body = await json_body(request) if request.method != "GET" else {}
    return {**request.query_params, **body}


Args = Annotated[dict[str, Any], Depends(_args)]


# ---- shapes ---------------------------------------------------------------------------------


def _tags(raw: list | None) -> list[dict[str, str]]:
    return [{"key": t["key"], "value": t.get("value", "")} for t in raw or []]


def uc_registered_model(model: dict) -> dict:
    """MLflow's RegisteredModel as UC's RegisteredModel message."""
    out = {k: model[k] for k in ("name", "creation_timestamp", "last_updated_timestamp", "user_id", "description") if k in model}
    out["aliases"] = [{"alias": a["alias"], "version": str(a["version"])} for a in model.get("aliases") or []]
    out["tags"] = _tags(model.get("tags"))
    return out


def uc_model_version(version: dict) -> dict:
    """MLflow's ModelVersion as UC's ModelVersion message."""
    keys = ("name", "version", "creation_timestamp", "last_updated_timestamp", "user_id", "description", "run_id",
            "status", "status_message", "model_id")
    out = {k: version[k] for k in keys if k in version}
    out["version"] = str(version["version"])
    if "source" in version:
        out["source"] = to_databricks_uri(version["source"])
    out["aliases"] = [{"alias": a, "version": str(version["version"])} for a in version.get("aliases") or []]
    out["tags"] = _tags(version.get("tags"))
    return out


def _three_level(name: Any) -> str:
    # The client looks for "specify all three levels" to add its hint about the legacy registry.
    if not isinstance(name, str) or len(name.split(".")) != 3 or not all(name.split(".")):
        raise InvalidParameter(f"Model name {name!r} is invalid: specify all three levels, catalog.schema.model")
    return name


def _pick(args: dict, *keys: str) -> dict:
    return {k: args[k] for k in keys if args.get(k) is not None}


# ---- registered models ----------------------------------------------------------------------


@router.get(PREFIX + "/registered-models:is-databricks-sdk-models-artifact-repository-enabled")
def sdk_models_repository_enabled() -> dict:
    """True: model files go through the Files API (false would send the client after cloud
    storage credentials, which agentwharf does not issue)."""
    return {"is_databricks_sdk_models_artifact_repository_enabled": True}


@router.post(PREFIX + "/registered-models/create")
async def create_registered_model(args: Args, mlflow: Mlflow, caller: Who, request: Request) -> dict:
    name = _three_level(args.get("name"))
    body = {"name": name, "tags": _tags(args.get("tags")), **_pick(args, "description")}
    answer = await mlflow.json(caller, "POST", _MLFLOW + "/registered-models/create", json=body)
    identities = request.app.state.control.identities
    if identities is not None:  # the prefix grants a new model falls under, as for MLflow's own create
        await asyncio.to_thread(identities.apply_prefix_grants, name)
    return {"registered_model": uc_registered_model(answer["registered_model"])}


@router.get(PREFIX + "/registered-models/get")
async def get_registered_model(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    answer = await mlflow.json(caller, "GET", _MLFLOW + "/registered-models/get", params=_pick(args, "name"))
    return {"registered_model": uc_registered_model(answer["registered_model"])}


@router.get(PREFIX + "/registered-models/search")
async def search_registered_models(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    answer = await mlflow.json(caller, "GET", _MLFLOW + "/registered-models/search",
                               params=_pick(args, "max_results", "page_token"))
    out: dict = {"registered_models": [uc_registered_model(m) for m in answer.get("registered_models", [])]}
    if answer.get("next_page_token"):
        out["next_page_token"] = answer["next_page_token"]
    return out


@router.patch(PREFIX + "/registered-models/update")
async def update_registered_model(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    name = args.get("name")
    if args.get("new_name"):
        _three_level(args["new_name"])
        await mlflow.json(caller, "POST", _MLFLOW + "/registered-models/rename", json={"name": name, "new_name": args["new_name"]})
        name = args["new_name"]
    if args.get("description") is not None:
        await mlflow.json(caller, "PATCH", _MLFLOW + "/registered-models/update", json={"name": name, "description": args["description"]})
    return await get_registered_model({"name": name}, mlflow, caller)


@router.delete(PREFIX + "/registered-models/delete")
async def delete_registered_model(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "DELETE", _MLFLOW + "/registered-models/delete", json=_pick(args, "name"))
    return {}


@router.post(PREFIX + "/registered-models/set-tag")
async def set_registered_model_tag(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "POST", _MLFLOW + "/registered-models/set-tag", json=_pick(args, "name", "key", "value"))
    return {}


@router.delete(PREFIX + "/registered-models/delete-tag")
async def delete_registered_model_tag(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "DELETE", _MLFLOW + "/registered-models/delete-tag", json=_pick(args, "name", "key"))
    return {}


@router.post(PREFIX + "/registered-models/alias")
async def set_alias(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "POST", _MLFLOW + "/registered-models/alias", json=_pick(args, "name", "alias", "version"))
    return {}


@router.delete(PREFIX + "/registered-models/alias")
async def delete_alias(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "DELETE", _MLFLOW + "/registered-models/alias", json=_pick(args, "name", "alias"))
    return {}


@router.get(PREFIX + "/registered-models/alias")
async def get_version_by_alias(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    answer = await mlflow.json(caller, "GET", _MLFLOW + "/registered-models/alias", params=_pick(args, "name", "alias"))
    return {"model_version": uc_model_version(answer["model_version"])}


# ---- model versions -------------------------------------------------------------------------


@router.post(PREFIX + "/model-versions/create")
async def create_model_version(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    """MLflow creates the version READY at once (its storage is the source's own location); the
    client then writes the files (the same bytes) through the Files API and finalizes."""
    _three_level(args.get("name"))
    if not isinstance(args.get("source"), str) or not args["source"]:
        raise InvalidParameter("'source' is required: the URI of the model's files")
    body = {**_pick(args, "name", "run_id", "description", "model_id"), "source": to_mlflow_uri(args["source"]),
            "tags": _tags(args.get("tags"))}
    answer = await mlflow.json(caller, "POST", _MLFLOW + "/model-versions/create", json=body)
    return {"model_version": uc_model_version(answer["model_version"])}


@router.post(PREFIX + "/model-versions/finalize")
async def finalize_model_version(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    """MLflow has no pending state: finalizing answers the (already READY) version."""
    return await get_model_version(args, mlflow, caller)


@router.get(PREFIX + "/model-versions/get")
async def get_model_version(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    answer = await mlflow.json(caller, "GET", _MLFLOW + "/model-versions/get", params=_pick(args, "name", "version"))
    return {"model_version": uc_model_version(answer["model_version"])}


@router.get(PREFIX + "/model-versions/search")
async def search_model_versions(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    answer = await mlflow.json(caller, "GET", _MLFLOW + "/model-versions/search",
                               params=_pick(args, "filter", "max_results", "page_token"))
    out: dict = {"model_versions": [uc_model_version(v) for v in answer.get("model_versions", [])]}
    if answer.get("next_page_token"):
        out["next_page_token"] = answer["next_page_token"]
    return out


@router.patch(PREFIX + "/model-versions/update")
async def update_model_version(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    answer = await mlflow.json(caller, "PATCH", _MLFLOW + "/model-versions/update", json=_pick(args, "name", "version", "description"))
    return {"model_version": uc_model_version(answer["model_version"])}


@router.delete(PREFIX + "/model-versions/delete")
async def delete_model_version(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "DELETE", _MLFLOW + "/model-versions/delete", json=_pick(args, "name", "version"))
    return {}


@router.post(PREFIX + "/model-versions/set-tag")
async def set_model_version_tag(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "POST", _MLFLOW + "/model-versions/set-tag", json=_pick(args, "name", "version", "key", "value"))
    return {}


@router.delete(PREFIX + "/model-versions/delete-tag")
async def delete_model_version_tag(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    await mlflow.json(caller, "DELETE", _MLFLOW + "/model-versions/delete-tag", json=_pick(args, "name", "version", "key"))
    return {}


@router.get(PREFIX + "/model-versions/get-download-uri")
async def get_download_uri(args: Args, mlflow: Mlflow, caller: Who) -> dict:
    answer = await mlflow.json(caller, "GET", _MLFLOW + "/model-versions/get-download-uri", params=_pick(args, "name", "version"))
    return {"artifact_uri": to_databricks_uri(answer["artifact_uri"])}


@router.post(PREFIX + "/model-versions/emit-lineage")
def emit_lineage() -> dict:
    """Lineage to notebooks, jobs and tables is Databricks'; there is none to record here."""
    return {}


@router.post(PREFIX + "/model-versions/generate-temporary-credentials")
def temporary_credentials() -> dict:
    raise NotImplementedByPlatform("Cloud storage credentials for model versions are not issued by agentwharf: model "
                                   "files go through the Files API (/api/2.0/fs/files/Models/...)")
