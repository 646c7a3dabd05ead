"""The part of Databricks' Files API that MLflow's Databricks artifact repositories use, over
MLflow's artifact service:

    GET|HEAD|PUT /api/2.0/fs/files/<path>        download, metadata, upload (one PUT)
    GET|HEAD     /api/2.0/fs/directories/<path>  list, exists
    POST         /api/2.0/fs/files/<path>?action=initiate-upload   see "Large files" below
    POST         /api/2.0/fs/create-download-url                   404: download with GET instead

Paths (uris.parse_files_path):

- ``/Models/<c>/<s>/<m>/<v>/...`` is the registered model version's storage in MLflow (its
  download URI). Reading needs READ on the model: the caller's own ``get-download-uri`` call to
  MLflow decides, then the files are read as the platform, which is what MLflow's own
  ``model-versions/get-artifact`` route allows with the same right. Writing (the ``databricks-uc``
  client uploads a new version's files) goes to MLflow as the caller.
- ``/WorkspaceInternal/Mlflow/Artifacts/<e>/Runs|LoggedModels/<id>/...`` is a run's or logged
  model's artifacts; MLflow's experiment permissions decide every read and write.

Large files: the SDK uploads files of 50 MB or more in parts to presigned cloud URLs. agentwharf
answers the initiation with a session, then refuses to issue part URLs, which is the SDK's
documented way back to a single PUT of the whole file (its ``FallbackToUploadUsingFilesApi``).

MLflow's artifact listing carries no times, so ``last_modified`` is left out of directory entries.
"""

from __future__ import annotations

import posixpath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from agentwharf.auth.caller import Caller
from agentwharf.databricks_compat.mlflow_calls import MlflowCalls, error_from, mlflow_calls, require_caller
from agentwharf.databricks_compat.uris import ModelFilesPath, files_path_of_model, mlflow_artifact_path, parse_files_path
from agentwharf.errors import AlreadyExists, NotFound, NotImplementedByPlatform

FILES = "/api/2.0/fs/files"
DIRECTORIES = "/api/2.0/fs/directories"
_ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
#: Handed out by initiate-upload; no part URL is ever issued for it (see module docstring).
SINGLE_PUT_SESSION = "agentwharf-single-put"
router = APIRouter()

Mlflow = Annotated[MlflowCalls, Depends(mlflow_calls)]
Who = Annotated[Caller, Depends(require_caller)]


class _Target:
    """Where a Files API path lives in MLflow's artifact service, and as whom to reach it."""

    def __init__(self, files_root: str, artifact_root: str, reader: Caller | None, writer: Caller):
        self.files_root = files_root        # the Files API path of artifact_root
        self.artifact_root = artifact_root  # MLflow artifact path ("<experiment>/...")
        self.reader = reader
        self.writer = writer


async def _resolve(path: str, mlflow: MlflowCalls, caller: Caller) -> tuple[_Target, str]:
    """The target root and the path below it."""
    named = parse_files_path(path)
    if isinstance(named, ModelFilesPath):
        answer = await mlflow.json(caller, "GET", "/api/2.0/mlflow/model-versions/get-download-uri",
                                   params={"name": named.model_name, "version": named.version})
        root = mlflow_artifact_path(answer["artifact_uri"])
        if root is None:
            raise NotImplementedByPlatform(f"Version {named.version} of {named.model_name} is stored at "
                                           f"{answer['artifact_uri']!r}, outside MLflow's artifact service; the Files API cannot serve it")
        return _Target(files_path_of_model(named.model_name, named.version), root, None, caller), named.rest
    return _Target("/" + path.strip("/"), named, caller, caller), ""


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


async def _list(mlflow: MlflowCalls, who: Caller | None, artifact_path: str) -> list[dict]:
    return (await mlflow.json(who, "GET", _ARTIFACTS, params={"path": artifact_path})).get("files", [])


async def _entry(mlflow: MlflowCalls, who: Caller | None, artifact_path: str) -> dict | None:
    parent, name = posixpath.split(artifact_path)
    return next((f for f in await _list(mlflow, who, parent) if f["path"] == name), None)


def directory_entry(files_dir: str, file: dict) -> dict:
    """One MLflow FileInfo of a listing as a Files API DirectoryEntry."""
    entry = {"path": f"{files_dir.rstrip('/')}/{file['path']}", "name": file["path"], "is_directory": bool(file.get("is_dir"))}
    if not entry["is_directory"]:
        entry["file_size"] = int(file.get("file_size") or 0)
    return entry


@router.get(FILES + "/{path:path}")
async def download(path: str, mlflow: Mlflow, caller: Who) -> StreamingResponse:
    target, rest = await _resolve(path, mlflow, caller)
    response = await mlflow.send(target.reader, "GET", f"{_ARTIFACTS}/{quote(_join(target.artifact_root, rest))}", stream=True)
    if response.status_code >= 400:
        body = await response.aread()
        await response.aclose()
        raise error_from(response, body)
    headers = {k: response.headers[k] for k in ("content-length", "last-modified") if k in response.headers}
    return StreamingResponse(mlflow.stream(response), media_type="application/octet-stream", headers=headers)


@router.head(FILES + "/{path:path}")
async def file_metadata(path: str, mlflow: Mlflow, caller: Who) -> Response:
    target, rest = await _resolve(path, mlflow, caller)
    entry = await _entry(mlflow, target.reader, _join(target.artifact_root, rest))
    if entry is None or entry.get("is_dir"):
        raise NotFound(f"No file at {path!r}")
    return Response(headers={"content-length": str(int(entry.get("file_size") or 0)), "content-type": "application/octet-stream"})


@router.put(FILES + "/{path:path}", status_code=204)
async def upload(path: str, request: Request, mlflow: Mlflow, caller: Who) -> Response:
    target, rest = await _resolve(path, mlflow, caller)
    artifact_path = _join(target.artifact_root, rest)
    if request.query_params.get("overwrite", "true").lower() == "false" and await _entry(mlflow, target.writer, artifact_path):
        raise AlreadyExists(f"A file already exists at {path!r} and overwrite is false")
    response = await mlflow.send(target.writer, "PUT", f"{_ARTIFACTS}/{quote(artifact_path)}", content=request.stream())
    if response.status_code >= 400:
        raise error_from(response, response.content)
    return Response(status_code=204)


@router.post(FILES + "/{path:path}")
async def initiate_upload(path: str, request: Request, mlflow: Mlflow, caller: Who) -> dict:
    action = request.query_params.get("action")
    if action != "initiate-upload":
        raise NotImplementedByPlatform(f"Files API action {action!r} is not supported by agentwharf")
    await _resolve(path, mlflow, caller)  # a bad path fails here, not after the client buffered a part
    return {"multipart_upload": {"session_token": SINGLE_PUT_SESSION}}


@router.post("/api/2.0/fs/create-upload-part-urls")
@router.post("/api/2.0/fs/create-resumable-upload-url")
def part_urls() -> dict:
    raise NotImplementedByPlatform("Presigned upload URLs are not issued by agentwharf; the client falls back to one "
                                   "PUT of the whole file to /api/2.0/fs/files/...")


@router.post("/api/2.0/fs/create-abort-upload-url")
def abort_url() -> dict:
    raise NotImplementedByPlatform("Nothing to abort: agentwharf keeps no partial uploads")


@router.post("/api/2.0/fs/create-download-url")
def download_url() -> dict:
    raise NotFound("Presigned download URLs are not issued by agentwharf; download with GET /api/2.0/fs/files/<path>")


async def _listing(path: str, mlflow: MlflowCalls, caller: Caller) -> list[dict]:
    target, rest = await _resolve(path, mlflow, caller)
    files = await _list(mlflow, target.reader, _join(target.artifact_root, rest))
    files_dir = _join(target.files_root, rest)
    return [directory_entry("/" + files_dir, f) for f in files]


@router.get(DIRECTORIES + "/{path:path}")
async def list_directory(path: str, mlflow: Mlflow, caller: Who) -> dict:
    """MLflow lists a missing folder as empty; Databricks answers 404 for it, and so do we."""
    contents = await _listing(path, mlflow, caller)
    if not contents:
        raise NotFound(f"No directory at {path!r}")
    return {"contents": contents}


@router.head(DIRECTORIES + "/{path:path}")
async def directory_exists(path: str, mlflow: Mlflow, caller: Who) -> Response:
    if not await _listing(path, mlflow, caller):
        raise NotFound(f"No directory at {path!r}")
    return Response()
