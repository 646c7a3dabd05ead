"""MLflow's AI Gateway, run in the serving gateway's own process for the LLM endpoints it serves.

The gateway answers LLM calls itself rather than forwarding them to MLflow's server: one HTTP
hop fewer (the benchmark's overhead budget is 2 ms a call), and the call stays on the path
that authenticates, limits, spools and answers. What runs is MLflow's own code: its resolver
reads the endpoint (models, traffic split, fallbacks) and decrypts its keys with the home's key
(``get_endpoint_config``), and its provider classes make the call (``_create_provider``:
traffic split, fallback, the OpenAI provider's passthrough). Nothing here reimplements them;
the one difference is that the calls borrow kept-alive connections (``connections``) where
MLflow would open one per call.

Loading an endpoint decrypts its keys, which derives MLflow's key-encryption key (PBKDF2,
600,000 rounds): tenths of a second of CPU. So loads happen off the event loop, once per
change: agentwharf's own changes reload at once (``reload``), and a background task notices
changes made in MLflow's UI or REST by comparing a cheap fingerprint (update times) every
``refresh_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from agentwharf.errors import NotFound, Unavailable
from agentwharf.llm import connections
from agentwharf.llm.connections import ProviderPool

log = logging.getLogger("agentwharf.llm.runtime")


@dataclass
class LoadedEndpoint:
    """One LLM endpoint as MLflow resolved it, with providers built per task."""

    name: str
    config: Any  # mlflow.store.tracking.gateway.entities.GatewayEndpointConfig
    fingerprint: tuple
    #: Every decrypted secret value, so no record or error ever carries one.
    secrets: tuple[bytes, ...]
    #: Guardrails attached in MLflow's AI Gateway, which the platform does not run (its calls
    #: are then refused rather than served unguarded).
    guardrails: tuple[str, ...] = ()
    providers: dict[str, Any] = field(default_factory=dict)
    #: The process's kept-alive provider connections, which the calls borrow (``None``: MLflow
    #: opens a connection per call).
    pool: ProviderPool | None = None

    def provider(self, task: str):
        provider = self.providers.get(task)
        if provider is None:
            from mlflow.gateway.config import EndpointType
            from mlflow.server.gateway_api import _create_provider

            provider = self.providers[task] = _create_provider(self.config, EndpointType(task), enable_tracing=False)
        return provider

    @property
    def endpoint_id(self) -> str:
        return self.config.endpoint_id

    def provider_of(self, model_name: str | None) -> str | None:
        for model in self.config.models:
            if model.model_name == model_name:
                return str(model.provider)
        return str(self.config.models[0].provider) if self.config.models else None


class LlmRuntime:
    def __init__(self, database_uri: str, environment: dict[str, str], refresh_seconds: float = 5.0):
        self.database_uri = database_uri
        self.environment = environment
        self.refresh_seconds = refresh_seconds
        self.store = None
        self._loaded: dict[str, LoadedEndpoint] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._refresher: asyncio.Task | None = None
        self.pool = ProviderPool()

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self._refresher = asyncio.create_task(self._refresh_forever(), name="llm-config-refresh")

    def _open(self) -> None:
        # MLflow's gateway code reads these from the process environment (its resolver builds
        # its own KEKManager); they are the platform's, set once at start, never a worker's.
        os.environ.update(self.environment)
        from mlflow.server import gateway_api  # noqa: F401 - imported here, once, off the event loop
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        # MLflow's provider calls then borrow ``self.pool`` while the platform makes them.
        connections.install()

        # Only the gateway's tables are read here. The artifact root is the one MLflow's server
        # uses with --serve-artifacts, so this process never needs a local folder or the
        # object store's keys for it (the store would create a folder for a local root).
        self.store = SqlAlchemyStore(self.database_uri, "mlflow-artifacts:/")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self.store is not None:
            self.store.engine.dispose()
        await self.pool.close()

    def cached(self, name: str) -> LoadedEndpoint | None:
        return self._loaded.get(name)

    async def get(self, name: str) -> LoadedEndpoint:
        """The endpoint, loaded on first use (off the event loop, once even if many wait).

        Raises:
            Unavailable: the runtime has not started yet.
            NotFound: MLflow's AI Gateway has no such endpoint.
        """
        loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded
        if self.store is None:
            raise Unavailable("The platform is starting its LLM gateway; retry shortly")
        async with self._locks.setdefault(name, asyncio.Lock()):
            loaded = self._loaded.get(name)
            if loaded is None:
                loaded = self._loaded[name] = await asyncio.to_thread(self._load, name)
            return loaded

    async def reload(self, name: str) -> None:
        """Forget what is cached for ``name`` and load it again now (after agentwharf changed it)."""
        self._loaded.pop(name, None)
        if self.store is None:
            return
        try:
            await self.get(name)
        except NotFound:
            pass

    def forget(self, name: str) -> None:
        self._loaded.pop(name, None)

    def _fingerprint(self, name: str) -> tuple:
        """When MLflow last changed the endpoint, its models and their secrets."""
        endpoint = self.store.get_gateway_endpoint(name=name)
        parts = [endpoint.endpoint_id, endpoint.last_updated_at]
        for mapping in endpoint.model_mappings:
            definition = mapping.model_definition
            parts.append((mapping.model_definition_id, getattr(definition, "last_updated_at", None)))
            secret_id = getattr(definition, "secret_id", None)
            if secret_id:
                parts.append((secret_id, self.store.get_secret_info(secret_id=secret_id).last_updated_at))
        parts.append(self._guardrails(endpoint.endpoint_id))
        return tuple(parts)

    def _guardrails(self, endpoint_id: str) -> tuple[str, ...]:
        return tuple(str(c.guardrail_id) for c in self.store.list_endpoint_guardrail_configs(endpoint_id))

    def _load(self, name: str) -> LoadedEndpoint:
        from mlflow.exceptions import MlflowException
        from mlflow.store.tracking.gateway.config_resolver import get_endpoint_config

        try:
            fingerprint = self._fingerprint(name)
            # MLflow caches resolved configs for a while; agentwharf decides when to reload.
            self.store._invalidate_secret_cache()
            config = get_endpoint_config(endpoint_name=name, store=self.store)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise NotFound(f"MLflow's AI Gateway has no endpoint {name!r}") from None
            raise
        secrets = tuple(str(value).encode() for model in config.models for value in (model.secret_value or {}).values()
                        if value and len(str(value)) >= 8)
        log.info("loaded LLM endpoint %s (%d model(s))", name, len(config.models))
        return LoadedEndpoint(name=name, config=config, fingerprint=fingerprint, secrets=secrets,
                              guardrails=fingerprint[-1], pool=self.pool)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            for name, loaded in list(self._loaded.items()):
                try:
                    current = await asyncio.to_thread(self._fingerprint, name)
                except Exception:  # deleted in MLflow, or the database busy: look again later
                    current = None
                if current != loaded.fingerprint and self._loaded.get(name) is loaded:
                    log.info("LLM endpoint %s changed in MLflow's AI Gateway; reloading", name)
                    try:
                        await self.reload(name)
                    except Exception as error:  # its calls will say why; keep watching the others
                        log.error("reloading LLM endpoint %s failed: %s", name, error)
