"""What the control plane asks MLflow: does a model version exist, which experiment is an
endpoint's. Calls go to the platform's own MLflow server; they block, so callers use threads."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from agentwharf.errors import NotFound

EXPERIMENT_PREFIX = "/agentwharf/serving-endpoints/"


class MlflowRegistry:
    def __init__(self, tracking_uri: str):
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def check_model_version(self, model_name: str, version: str) -> None:
        """Raises:
            NotFound: the registered model or the version does not exist.
        """
        try:
            self.client.get_model_version(model_name, version)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                self.client.get_registered_model(model_name)
            except MlflowException:
                raise NotFound(f"Registered model {model_name!r} does not exist") from None
            raise NotFound(f"Version {version} of registered model {model_name!r} does not exist") from None

    def endpoint_experiment(self, endpoint_name: str) -> str:
        """The id of the endpoint's experiment, created (or restored) on first use."""
        name = EXPERIMENT_PREFIX + endpoint_name
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return self.client.create_experiment(name, tags={"agentwharf.endpoint": endpoint_name})
        if experiment.lifecycle_stage == "deleted":
            self.client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
