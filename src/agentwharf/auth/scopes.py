"""API scopes an on-behalf-of-user token can carry, and what each unlocks here.

A model's ``UserAuthPolicy(api_scopes=[...])`` names Databricks API scopes. Those that map to a
service agentwharf runs are honoured; the others (Genie, Vector Search, SQL) name services that
do not exist here, so a token carrying them unlocks nothing more.
"""

from __future__ import annotations

#: Query serving endpoints (the gateway) within the caller's own CAN_QUERY grants.
SERVING_ENDPOINTS = "serving.serving-endpoints"

SUPPORTED_SCOPES = frozenset({SERVING_ENDPOINTS})
