"""The ``authorization_function`` of the platform's MLflow server (MLflow's basic-auth app).

It runs inside MLflow's process. Only the platform can reach that server: it listens on a
private loopback port and every request must carry the platform's secret. The platform has
already checked the caller's token, and names the caller in ``X-Agentwharf-Principal``; MLflow's
basic-auth app then applies its own permissions to that user. A request with the secret and no
principal is the platform itself, which acts as MLflow's admin.
"""

from __future__ import annotations

import hmac
import os

from agentwharf.errors import Unauthenticated

SECRET_HEADER = "X-Agentwharf-Secret"
PRINCIPAL_HEADER = "X-Agentwharf-Principal"
SECRET_ENV = "AGENTWHARF_MLFLOW_SECRET"
ADMIN_ENV = "AGENTWHARF_MLFLOW_ADMIN"


def vouching_headers(secret: str, principal: str | None) -> dict[str, str]:
    """What the platform adds to a request to MLflow: its secret, and who the caller is
    (``None``: the platform itself, MLflow's admin). The one place that speaks this protocol
    from the platform's side; ``authenticate`` below is the other."""
    headers = {SECRET_HEADER: secret}
    if principal is not None:
        headers[PRINCIPAL_HEADER] = principal
    return headers


def authenticate():
    from flask import Response, request
    from werkzeug.datastructures import Authorization

    secret = os.environ.get(SECRET_ENV, "")
    given = request.headers.get(SECRET_HEADER, "")
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        refused = Unauthenticated("Reach MLflow through the agentwharf platform")
        return Response(refused.error_body(), status=refused.http_status, mimetype="application/json")
    username = request.headers.get(PRINCIPAL_HEADER) or os.environ[ADMIN_ENV]
    return Authorization("basic", {"username": username, "password": ""})
