"""Governance: who is calling, and what they may do.

Two systems decide, each over what it owns, with one identity:

* agentwharf decides who the caller is (personal access tokens, and the short-lived signed
  tokens it mints for workers), who may see, query, review and manage a serving endpoint,
  and who may deploy a registered model (prefix grants such as ``main.default`` included).
* MLflow's own basic-auth app, running inside the platform's MLflow server, decides access to
  MLflow's resources (experiments, runs, traces, registered models, prompts). The platform
  tells it who the caller is; agentwharf keeps its users and grants in step (see
  ``mlflow_bridge``), so one token works on both sides.
"""
