"""Where Databricks' clients and MLflow's server name the same artifacts differently.

MLflow's server (``--serve-artifacts``) hands out ``mlflow-artifacts:/<experiment>/...``; a
client with ``MLFLOW_TRACKING_URI=databricks`` can only use
``dbfs:/databricks/mlflow-tracking/<experiment>/...`` and reaches those files through the Files
API under ``/WorkspaceInternal/Mlflow/Artifacts/...``; registered model versions it reaches under
``/Models/<catalog>/<schema>/<model>/<version>/``. Every function here is pure, so the three
spellings provably map onto one another (tests/unit/test_databricks_uris.py).

    mlflow-artifacts:/<e>/<run>/artifacts/x           (MLflow)
    dbfs:/databricks/mlflow-tracking/<e>/<run>/artifacts/x     (what the client sees)
    /WorkspaceInternal/Mlflow/Artifacts/<e>/Runs/<run>/artifacts/x   (Files API path)

    mlflow-artifacts:/<e>/models/<id>/artifacts/x
    dbfs:/databricks/mlflow-tracking/<e>/logged_models/<id>/artifacts/x
    /WorkspaceInternal/Mlflow/Artifacts/<e>/LoggedModels/<id>/artifacts/x
"""

from __future__ import annotations

from dataclasses import dataclass

from agentwharf.errors import InvalidParameter, NotImplementedByPlatform

MLFLOW_SCHEME = "mlflow-artifacts:"
DBFS_TRACKING = "dbfs:/databricks/mlflow-tracking/"
WORKSPACE_ARTIFACTS = "WorkspaceInternal/Mlflow/Artifacts/"
MODELS_ROOT = "Models/"

#: MLflow's folder of logged models under an experiment, and Databricks' names for the tiers.
_MLFLOW_MODELS = "models"
_DBFS_MODELS = "logged_models"
_FILES_TIERS = {"Runs": None, "LoggedModels": _MLFLOW_MODELS}


def _segments(path: str) -> list[str]:
    """The path's segments; raises on anything that could step outside its root."""
    parts = [p for p in path.strip("/").split("/")]
    if parts == [""]:
        return []
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidParameter(f"Invalid path {path!r}: empty, '.' and '..' segments are not allowed")
    return parts


def _experiment_path(uri: str, prefix: str) -> list[str] | None:
    """Segments after ``prefix`` if they start with a numeric experiment id, else None."""
    if not uri.startswith(prefix):
        return None
    parts = uri[len(prefix):].strip("/").split("/")
    return parts if parts and parts[0].isdigit() else None


def to_databricks_uri(uri: str) -> str:
    """MLflow's ``mlflow-artifacts:`` URI as a Databricks client must see it; others unchanged."""
    parts = _experiment_path(uri, MLFLOW_SCHEME + "/") or _experiment_path(uri, MLFLOW_SCHEME + "///")
    if parts is None:
        return uri
    if len(parts) > 1 and parts[1] == _MLFLOW_MODELS:
        parts[1] = _DBFS_MODELS
    return DBFS_TRACKING + "/".join(parts)


def to_mlflow_uri(uri: str) -> str:
    """The inverse of :func:`to_databricks_uri` (a client sends back what it was shown)."""
    parts = _experiment_path(uri, DBFS_TRACKING)
    if parts is None:
        return uri
    if len(parts) > 1 and parts[1] == _DBFS_MODELS:
        parts[1] = _MLFLOW_MODELS
    return MLFLOW_SCHEME + "/" + "/".join(parts)


def mlflow_artifact_path(uri: str) -> str | None:
    """``mlflow-artifacts:/a/b`` -> ``a/b`` (the path MLflow's artifact service takes), else None."""
    if not uri.startswith(MLFLOW_SCHEME):
        return None
    return uri[len(MLFLOW_SCHEME):].strip("/")


@dataclass(frozen=True)
class ModelFilesPath:
    """``/Models/<c>/<s>/<m>/<v>/<rest>``: a file (or folder) of a registered model version."""

    model_name: str
    version: str
    rest: str


def parse_files_path(path: str) -> ModelFilesPath | str:
    """A Files API path as what it names.

    Returns:
        A :class:`ModelFilesPath` for ``/Models/...``, or the MLflow artifact path (``<e>/...``)
        for ``/WorkspaceInternal/Mlflow/Artifacts/...``.

    Raises:
        InvalidParameter: a malformed path, or one outside what agentwharf serves (the
            message names what is not served).
    """
    parts = _segments(path)
    joined = "/".join(parts) + "/"
    if joined.startswith(MODELS_ROOT):
        if len(parts) < 5 or not parts[4].isdigit():
            raise InvalidParameter(f"Expected /Models/<catalog>/<schema>/<model>/<version>[/path], got {path!r}")
        return ModelFilesPath(".".join(parts[1:4]), parts[4], "/".join(parts[5:]))
    if joined.startswith(WORKSPACE_ARTIFACTS):
        rest = parts[3:]
        if len(rest) < 3 or not rest[0].isdigit() or rest[1] not in _FILES_TIERS:
            raise InvalidParameter(
                f"Expected /WorkspaceInternal/Mlflow/Artifacts/<experiment>/Runs|LoggedModels/<id>[/path], got {path!r}")
        folder = _FILES_TIERS[rest[1]]
        return "/".join([rest[0], *([folder] if folder else []), *rest[2:]])
    raise NotImplementedByPlatform(
        f"agentwharf's Files API serves only /Models/... (registered model versions) and "
        f"/WorkspaceInternal/Mlflow/Artifacts/... (MLflow run and logged-model artifacts), not {path!r}: "
        "Unity Catalog volumes and workspace files are not served")


def files_path_of_model(model_name: str, version: str, rest: str = "") -> str:
    """The Files API path of a model version's file: ``/Models/c/s/m/v[/rest]``."""
    return "/" + "/".join([MODELS_ROOT.rstrip("/"), *model_name.split("."), version, *([rest] if rest else [])])
