"""LLM endpoints: serving endpoints whose served entities are external models (a provider and a
model, Databricks' ``external_model``), built on MLflow's in-server AI Gateway.

MLflow's gateway owns what it already does: providers, keys in its encrypted secret store,
traffic split, fallbacks, guardrails. agentwharf adds its identities and permissions, the
Databricks-shaped REST, per-caller rate limits, and the durable trace and inference row (with
token usage) of every call.

    spec.py         external_model in Databricks' shape, validated (never keeps a key visible)
    ai_gateway.py   the ai_gateway settings in Databricks' shape, validated
    mlflow_admin.py the AI Gateway objects behind an LLM endpoint (secrets, models, endpoint)
    runtime.py      MLflow's providers for each LLM endpoint, in the gateway's process
    calls.py        one call: the provider's answer or stream, its token usage, its record
    usage.py        token usage as providers report it, or estimated
    limits.py       per-caller call and token rate limits (all endpoints, agents included)
"""
