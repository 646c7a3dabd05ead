"""What Databricks' own clients (databricks-agents, MLflow with ``MLFLOW_TRACKING_URI=databricks``
and the ``databricks-uc`` registry) need beyond the serving REST, built over MLflow and the control
plane without state of its own. The recorded requests are in shared/reference/databricks-clients.md.

    uc_registry      Unity Catalog model registry facade over MLflow's registry
    files_api        the Files API subset over MLflow's artifact service
    agents_records   deployment records, endpoint tag/description patches, the deploy-time probes
    unsupported      clear 501 errors for features agentwharf does not serve (UC tables, Apps, OAuth, AI gateway
                     settings, provisioned throughput, UC connections)
    tracking_view    MLflow's tracking REST with artifact URIs as a Databricks client must see them
    uris             the pure mapping between MLflow's and Databricks' names for the same files

It depends on the control plane, never the other way round (an import-linter contract in
pyproject.toml keeps it so): the platform, the composition root, mounts its routers on the
control app (``ROUTERS``), routes its prefixes there (``ROUTE_PREFIXES``) and wraps its MLflow
proxy in ``DatabricksTrackingView``. Services and stores know nothing of it.
"""

from __future__ import annotations

from agentwharf.databricks_compat import agents_records, files_api, uc_registry, unsupported
from agentwharf.databricks_compat.tracking_view import DatabricksTrackingView
from agentwharf.databricks_compat.unsupported import OAUTH_NOT_IMPLEMENTED, OAUTH_PREFIX

#: Included by the control app in this order (the inference-table probe before the UC catch-all).
ROUTERS = (uc_registry.router, files_api.router, agents_records.router, unsupported.router)
#: Path prefixes of those routers that the platform must send to the control app (the agents and
#: serving-endpoint paths are the control plane's already).
ROUTE_PREFIXES = ("/api/2.0/mlflow/unity-catalog/", "/api/2.0/fs/", "/api/2.1/unity-catalog/", "/api/2.0/managed-evals/",
                  "/api/2.0/apps", "/api/2.0/external-function")

__all__ = ["OAUTH_NOT_IMPLEMENTED", "OAUTH_PREFIX", "ROUTERS", "ROUTE_PREFIXES", "DatabricksTrackingView"]
