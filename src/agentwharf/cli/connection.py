"""How every command finds the platform, and the options that say so.

``--host`` names the platform's base URL, ``--home`` a local platform home (the URL it recorded
and its admin token); without them the client's settings decide (``AGENTWHARF_HOST``,
``MLFLOW_TRACKING_URI``, ``DATABRICKS_HOST``, ``./.agentwharf``; see ``ClientSettings``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agentwharf.client import PlatformClient
from agentwharf.settings import ClientSettings, home_admin_token, recorded_base_url

HostOption = Annotated[str | None, typer.Option(
    "--host", help="The platform's base URL. Default: $AGENTWHARF_HOST, $MLFLOW_TRACKING_URI, $DATABRICKS_HOST, "
                   "or the URL the home's platform recorded.")]
HomeOption = Annotated[Path | None, typer.Option(
    "--home", help="A local platform home: the URL its platform recorded, and its admin token. "
                   "Default: $AGENTWHARF_HOME or ./.agentwharf")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON, for scripts.")]


def client_settings(host: str | None = None, home: Path | None = None) -> ClientSettings:
    """An explicit ``--home`` means its platform, as its admin: its recorded URL and its
    ``admin.token`` win over the environment's (an explicit ``--host`` wins over both)."""
    overrides: dict = {}
    if home is not None:
        overrides["home"] = home
        if host is None and (recorded := recorded_base_url(home)):
            overrides["host"] = recorded
        if admin_token := home_admin_token(home):
            overrides["token"] = admin_token
    if host is not None:
        overrides["host"] = host
    return ClientSettings(**overrides)


def connect(host: str | None = None, home: Path | None = None) -> PlatformClient:
    """The client for the platform these options (or the environment) name."""
    return PlatformClient(client_settings(host, home))
