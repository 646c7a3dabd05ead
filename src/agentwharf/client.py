"""The one typed HTTP client of the platform, used by `agentwharf.agents` and the CLI."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson

from agentwharf import errors
from agentwharf.errors import DeploymentFailed
from agentwharf.settings import ClientSettings
from agentwharf.tls import tls_context


class PlatformUnreachable(errors.Unavailable):
    """Nothing answers at the platform's address."""


def _raise_for(response: httpx.Response) -> None:
    """Raises the platform's error as the class of ``agentwharf.errors`` it names, so callers
    can ``except NotFound``."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    raise errors.from_json(body, response.status_code, response.text[:2000] or response.reason_phrase)


def _poll_interval(elapsed: float) -> float:
    """How long to wait before asking again whether a deploy answers: often at first (a warm
    spare worker takes a version in about a second, and every tenth of a second of lag is the
    caller's), then less as an environment build runs for tens of seconds."""
    return 0.05 if elapsed < 5 else 0.2 if elapsed < 60 else 1.0


class PlatformClient:
    def __init__(self, settings: ClientSettings | None = None):
        self.settings = settings or ClientSettings()
        token = self.settings.resolved_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.settings.host, timeout=self.settings.timeout, headers=headers,
                                 verify=tls_context())

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        response = self._send(method, path, json, **kwargs)
        return response.json() if response.content else {}

    def raw(self, method: str, path: str, **kwargs: Any) -> str:
        """A route that answers text (Prometheus metrics), not JSON."""
        return self._send(method, path, None, **kwargs).text

    def _send(self, method: str, path: str, json: Any, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, json=json, **kwargs)
        except httpx.ConnectError:
            raise PlatformUnreachable(
                f"No agentwharf platform answers at {self.settings.host}; start one with `agentwharf up`, "
                "or name it with --host or AGENTWHARF_HOST"
            ) from None
        _raise_for(response)
        return response

    # -- platform --------------------------------------------------------------------------

    def health(self) -> dict:
        return self.request("GET", "/healthz")

    # -- endpoints -------------------------------------------------------------------------

    def list_endpoints(self) -> list[dict]:
        return self.request("GET", "/api/2.0/serving-endpoints").get("endpoints", [])

    def get_endpoint(self, name: str) -> dict:
        return self.request("GET", f"/api/2.0/serving-endpoints/{name}")

    def delete_endpoint(self, name: str) -> None:
        self.request("DELETE", f"/api/2.0/serving-endpoints/{name}")

    def create_endpoint(self, body: dict) -> dict:
        """``POST /api/2.0/serving-endpoints`` (Databricks' shape: name, config, ai_gateway, tags)."""
        return self.request("POST", "/api/2.0/serving-endpoints", json=body)

    def get_ai_gateway(self, name: str) -> dict:
        return self.request("GET", f"/api/2.0/serving-endpoints/{name}/ai-gateway")

    def put_ai_gateway(self, name: str, settings: dict) -> dict:
        return self.request("PUT", f"/api/2.0/serving-endpoints/{name}/ai-gateway", json=settings)

    # -- deployments -----------------------------------------------------------------------

    def deploy(self, body: dict) -> dict:
        return self.request("POST", "/api/2.0/agents/deployments:deploy", json=body)

    def list_deployments(self) -> list[dict]:
        return self.request("GET", "/api/2.0/agents/deployments").get("chain_deployments", [])

    def get_deployments(self, model_name: str, model_version: str | None = None) -> list[dict]:
        path = f"/api/2.0/agents/deployments/{model_name}"
        if model_version is not None:
            path += f"/versions/{model_version}"
        return self.request("GET", path).get("chain_deployments", [])

    def delete_deployment(self, model_name: str, model_version: str | None = None) -> None:
        path = f"/api/2.0/agents/deployments/{model_name}"
        if model_version is not None:
            path += f"/versions/{model_version}"
        self.request("DELETE", path)

    def wait_for_entity(self, endpoint_name: str, entity_name: str, timeout: float,
                        on_progress: Callable[[str, float], None] | None = None) -> dict:
        """Poll until the served entity answers on the endpoint's live config.

        Raises:
            DeploymentFailed: the update failed (the message has the worker's log tail).
            TimeoutError: not ready within ``timeout``.
        """
        started = time.monotonic()
        while True:
            endpoint = self.get_endpoint(endpoint_name)
            live = {e["name"]: e for e in endpoint.get("config", {}).get("served_entities", [])}
            state = endpoint.get("state", {})
            if entity_name in live and live[entity_name]["state"]["deployment"] == "DEPLOYMENT_READY":
                return endpoint
            if state.get("config_update") == "UPDATE_FAILED" and entity_name not in live:
                raise DeploymentFailed(state.get("config_update_message") or "The deployment failed")
            elapsed = time.monotonic() - started
            if elapsed > timeout:
                raise TimeoutError(f"{entity_name} on {endpoint_name} was not ready after {timeout:.0f}s")
            if on_progress is not None:
                pending = {e["name"]: e for e in endpoint.get("pending_config", {}).get("served_entities", [])}
                message = (pending.get(entity_name) or live.get(entity_name) or {}).get("state", {}).get("deployment_state_message", "")
                on_progress(message or state.get("config_update", ""), elapsed)
            time.sleep(_poll_interval(elapsed))

    def inference_rows(self, endpoint_name: str, **filters: Any) -> Iterator[list[dict]]:
        """Pages of the endpoint's inference table, oldest first."""
        params = {k: v for k, v in filters.items() if v is not None}
        while True:
            page = self.request("GET", f"/api/2.0/serving-endpoints/{endpoint_name}/inference-table", params=params)
            yield page["rows"]
            if "next_page_token" not in page:
                return
            params["page_token"] = page["next_page_token"]

    # -- queries ---------------------------------------------------------------------------

    def query(self, endpoint_name: str, body: dict) -> dict:
        return self.request("POST", f"/serving-endpoints/{endpoint_name}/invocations", json=body)

    def query_stream(self, endpoint_name: str, body: dict) -> Iterator[dict]:
        with self.http.stream("POST", f"/serving-endpoints/{endpoint_name}/invocations", json={**body, "stream": True}) as response:
            if not response.is_success:
                response.read()
                _raise_for(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                yield orjson.loads(data)



