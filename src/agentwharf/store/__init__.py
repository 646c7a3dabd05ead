"""agentwharf's own tables (endpoints and their served entities), next to MLflow's.

An agent deployment is not stored separately: it is a served entity whose model is a
registered model, so the `agents` API and the serving-endpoints API can never disagree.
"""
