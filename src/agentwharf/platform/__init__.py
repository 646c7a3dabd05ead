"""`agentwharf up`: one base URL composing MLflow's server, the control plane and the gateway."""
