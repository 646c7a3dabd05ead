"""What the control plane asks MLflow: does a model version exist, what does it declare, which
experiment is an endpoint's, who may use a model. Calls go straight to the platform's own
MLflow server as its admin (the platform secret); they block, so callers use threads."""

from __future__ import annotations

import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import httpx
import yaml

from agentwharf.auth.mlflow_plugin import vouching_headers
from agentwharf.auth.model_policy import ModelPolicy, policy_from_mlmodel
from agentwharf.auth.scopes import SUPPORTED_SCOPES
from agentwharf.errors import MlflowUnavailable, NotFound
from agentwharf.serving.env_build import ENVIRONMENT_FILES
from agentwharf.tls import tls_context

log = logging.getLogger("agentwharf.registry")

EXPERIMENT_PREFIX = "/agentwharf/serving-endpoints/"
#: What a deploy reads of a model version: its MLmodel (the policy), and what decides its environment.
DEPLOY_FILES = ENVIRONMENT_FILES
_KEPT_VERSIONS = 256


class MlflowRegistry:
    def __init__(self, tracking_uri: str, secret: str):
        self.url, self.secret = tracking_uri, secret
        self.client = httpx.Client(base_url=tracking_uri, headers=vouching_headers(secret, None), timeout=60,
                                  verify=tls_context())
        #: (model, version) -> its ``DEPLOY_FILES``, the oldest dropped first.
        self._kept_files: dict[tuple[str, str], dict[str, bytes]] = {}
        self._pool = ThreadPoolExecutor(max_workers=len(DEPLOY_FILES), thread_name_prefix="registry-files")

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        try:
            return self.client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise MlflowUnavailable(f"MLflow server unreachable: {error}") from None

    def _json(self, method: str, path: str, **kwargs) -> dict | None:
        """The answer's JSON, None for RESOURCE_DOES_NOT_EXIST."""
        response = self._call(method, path, **kwargs)
        if response.status_code == 404 or (response.status_code == 400 and "RESOURCE_DOES_NOT_EXIST" in response.text):
            return None
        if response.status_code >= 400:
            raise MlflowUnavailable(f"MLflow answered {response.status_code} to {path}: {response.text[:500]}")
        return response.json()

    def check_model_version(self, model_name: str, version: str) -> None:
        """Raises:
            NotFound: the registered model or the version does not exist.
        """
        if self._json("GET", "/api/2.0/mlflow/model-versions/get", params={"name": model_name, "version": version}) is not None:
            return
        if self._json("GET", "/api/2.0/mlflow/registered-models/get", params={"name": model_name}) is None:
            raise NotFound(f"Registered model {model_name!r} does not exist")
        raise NotFound(f"Version {version} of registered model {model_name!r} does not exist")

    def model_names(self) -> list[str]:
        names, token = [], None
        while True:
            params = {"max_results": 1000, **({"page_token": token} if token else {})}
            page = self._json("GET", "/api/2.0/mlflow/registered-models/search", params=params) or {}
            names += [model["name"] for model in page.get("registered_models", [])]
            token = page.get("next_page_token")
            if not token:
                return names

    def model_files(self, model_name: str, version: str, names: tuple[str, ...]) -> dict[str, bytes]:
        """Some of a model version's ``DEPLOY_FILES`` (those it has: its policy, what decides its
        environment), read as the platform from MLflow's artifact service once per version, at
        once, and kept: a version's files do not change."""
        if unknown := set(names) - set(DEPLOY_FILES):
            raise ValueError(f"not among the files a deploy reads: {sorted(unknown)}")
        return {name: data for name, data in self._deploy_files(model_name, version).items() if name in names}

    def _deploy_files(self, model_name: str, version: str) -> dict[str, bytes]:
        key = (model_name, version)
        if (kept := self._kept_files.get(key)) is None:
            found = self._fetch(self._artifact_root(model_name, version), DEPLOY_FILES)
            if "MLmodel" not in found:
                return found  # not kept: the version may yet be registered, or MLflow failed to answer
            kept = self._kept_files[key] = found
            while len(self._kept_files) > _KEPT_VERSIONS:
                self._kept_files.pop(next(iter(self._kept_files)))
        return kept

    def _artifact_root(self, model_name: str, version: str) -> str | None:
        uri = self._json("GET", "/api/2.0/mlflow/model-versions/get-download-uri",
                         params={"name": model_name, "version": version})
        if uri is None or not uri.get("artifact_uri", "").startswith("mlflow-artifacts:/"):
            return None
        return quote(uri["artifact_uri"][len("mlflow-artifacts:/"):].strip("/"))

    def _fetch(self, root: str | None, names: tuple[str, ...]) -> dict[str, bytes]:
        if root is None:
            return {}
        # At once: right after a deploy, these wait on MLflow's server, not on this process.
        answers = self._pool.map(lambda name: self._call("GET", f"/api/2.0/mlflow-artifacts/artifacts/{root}/{quote(name)}"), names)
        return {name: response.content for name, response in zip(names, answers, strict=True) if response.status_code == 200}

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - model versions are immutable; the registry lives as long as the platform
    def model_policy(self, model_name: str, version: str) -> ModelPolicy:
        """What the model version declares in its MLmodel (resources, auth policy)."""
        mlmodel = self.model_files(model_name, version, ("MLmodel",)).get("MLmodel")
        if mlmodel is None:
            return ModelPolicy()
        policy = policy_from_mlmodel(yaml.safe_load(mlmodel) or {})
        if unserved := sorted(set(policy.api_scopes or ()) - SUPPORTED_SCOPES):
            # Cached per version, so said once: the token will carry them, they unlock nothing here.
            log.warning("%s v%s asks for API scopes %s, which name services agentwharf does not run; "
                        "its on-behalf-of token carries them but they grant nothing", model_name, version, unserved)
        return policy

    def endpoint_experiment(self, endpoint_name: str) -> str:
        """The id of the endpoint's experiment, created (or restored) on first use."""
        name = EXPERIMENT_PREFIX + endpoint_name
        found = self._json("GET", "/api/2.0/mlflow/experiments/get-by-name", params={"experiment_name": name})
        if found is None:
            created = self._json("POST", "/api/2.0/mlflow/experiments/create",
                                 json={"name": name, "tags": [{"key": "agentwharf.endpoint", "value": endpoint_name}]})
            return created["experiment_id"]
        experiment = found["experiment"]
        if experiment.get("lifecycle_stage") == "deleted":
            self._json("POST", "/api/2.0/mlflow/experiments/restore", json={"experiment_id": experiment["experiment_id"]})
        return experiment["experiment_id"]

    def set_version_tag(self, model_name: str, version: str, key: str, value: str) -> None:
        self._json("POST", "/api/2.0/mlflow/model-versions/set-tag",
                   json={"name": model_name, "version": version, "key": key, "value": value})

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.client.close()
