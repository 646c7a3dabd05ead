"""An external model in Databricks' shape, validated before anything changes.

    {"name": "chat", "external_model": {
        "name": "gpt-4o-mini", "provider": "openai", "task": "llm/v1/chat",
        "openai_config": {"openai_api_base": "https://...", "openai_api_key": "{{secrets/scope/key}}"
                          | "openai_api_key_plaintext": "sk-..."}}}

``provider`` is ``openai`` or ``custom`` (any OpenAI-compatible server: vLLM, Ollama, llama.cpp,
a hosted API); ``custom`` also takes Databricks' ``custom_provider_config`` with a bearer token.
Both run on MLflow's OpenAI provider. A key is either given in plain text once (it goes to
MLflow's encrypted secret store and nowhere else) or named as a reference to a secret already
in that store: ``{{secrets/<scope>/<key>}}`` is MLflow's AI Gateway secret named
``<scope>/<key>`` (``{{secrets/<name>}}`` the one named ``<name>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from agentwharf.errors import InvalidParameter, NotImplementedByPlatform

CHAT, COMPLETIONS, EMBEDDINGS = "llm/v1/chat", "llm/v1/completions", "llm/v1/embeddings"
TASKS = (CHAT, COMPLETIONS, EMBEDDINGS)
PROVIDERS = ("openai", "custom")
#: Databricks' other providers, refused by name rather than as unknown.
_OTHER_PROVIDERS = ("anthropic", "cohere", "amazon-bedrock", "google-cloud-vertex-ai", "palm", "ai21labs",
                    "databricks-model-serving", "gemini")
_REFERENCE = re.compile(r"^\{\{\s*secrets/([^{}\s]+)\s*\}\}$")
_ENTITY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class ExternalModelSpec:
    """One external model served by an LLM endpoint. ``key`` (a plaintext key given in this
    request) is kept out of ``repr`` and out of every view."""

    name: str
    model: str
    provider: str
    task: str
    api_base: str | None
    organization: str | None = None
    #: The MLflow AI Gateway secret holding the key, when the request named one.
    key_reference: str | None = None
    key: str | None = field(default=None, repr=False, compare=False)

    def public(self) -> dict[str, Any]:
        """``external_model`` as views show it: a key reference, never a key (a key given in
        plain text is in MLflow's secret store; a config sent back without one keeps it)."""
        config: dict[str, Any] = {}
        if self.api_base:
            config["openai_api_base"] = self.api_base
        if self.organization:
            config["openai_organization"] = self.organization
        if self.key_reference:
            config["openai_api_key"] = f"{{{{secrets/{self.key_reference}}}}}"
        return {"name": self.model, "provider": self.provider, "task": self.task, "openai_config": config}

    def same_provider_settings(self, other: ExternalModelSpec) -> bool:
        return self.public() == other.public()


def secret_reference(value: Any, where: str) -> str:
    match = _REFERENCE.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise InvalidParameter(f"{where} must be a secret reference '{{{{secrets/<scope>/<key>}}}}' (an MLflow AI Gateway "
                               "secret of that name); to give the key itself use the *_plaintext field")
    return match.group(1)


def _api_base(value: Any, where: str) -> str | None:
    if value is None:
        return None
    parsed = urlparse(value) if isinstance(value, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidParameter(f"{where} must be an http(s) URL such as https://api.openai.com/v1, got {value!r}")
    return value.rstrip("/")


def _key(config: dict, reference_field: str, plaintext_field: str, where: str) -> tuple[str | None, str | None]:
    reference, plaintext = config.get(reference_field), config.get(plaintext_field)
    if reference is not None and plaintext is not None:
        raise InvalidParameter(f"{where}: give either {reference_field} (a secret reference) or {plaintext_field}, not both")
    if plaintext is not None:
        if not isinstance(plaintext, str) or not plaintext.strip():
            raise InvalidParameter(f"{where}.{plaintext_field} must be a non-empty string")
        return None, plaintext.strip()
    if reference is not None:
        return secret_reference(reference, f"{where}.{reference_field}"), None
    return None, None


def _openai_config(raw: Any, where: str, provider: str) -> tuple[str | None, str | None, str | None, str | None]:
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where} must be an object")
    api_type = raw.get("openai_api_type", "openai")
    if api_type not in (None, "openai"):
        raise NotImplementedByPlatform(f"Not supported by agentwharf: {where}.openai_api_type {api_type!r} (Azure OpenAI); "
                                       "use 'openai' with the deployment's OpenAI-compatible base URL")
    api_base = _api_base(raw.get("openai_api_base"), f"{where}.openai_api_base")
    if provider == "custom" and api_base is None:
        raise InvalidParameter(f"{where}.openai_api_base is required for provider 'custom': the server's OpenAI-compatible "
                               "base URL, such as http://127.0.0.1:8000/v1")
    # No key is fine here: a local model server often needs none, and a config sent back
    # unchanged keeps the key stored before (the endpoint service decides which applies).
    reference, key = _key(raw, "openai_api_key", "openai_api_key_plaintext", where)
    organization = raw.get("openai_organization")
    if organization is not None and not isinstance(organization, str):
        raise InvalidParameter(f"{where}.openai_organization must be a string")
    return api_base, organization, reference, key


def _custom_config(raw: Any, where: str) -> tuple[str | None, str | None, str | None, str | None]:
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where} must be an object")
    api_base = _api_base(raw.get("custom_provider_url"), f"{where}.custom_provider_url")
    if api_base is None:
        raise InvalidParameter(f"{where}.custom_provider_url is required: the server's OpenAI-compatible base URL")
    if raw.get("api_key_auth") is not None:
        raise NotImplementedByPlatform(f"Not supported by agentwharf: {where}.api_key_auth (a key in a custom header); "
                                       "use bearer_token_auth, which OpenAI-compatible servers take")
    auth = raw.get("bearer_token_auth")
    if auth is None:
        return api_base, None, None, None
    if not isinstance(auth, dict):
        raise InvalidParameter(f"{where}.bearer_token_auth must be an object")
    reference, key = _key(auth, "token", "token_plaintext", f"{where}.bearer_token_auth")
    return api_base, None, reference, key


def parse_external_model(raw: dict, where: str) -> ExternalModelSpec:
    """A served entity with ``external_model``.

    Raises:
        InvalidParameter: a field is missing or wrong (named).
        NotImplementedByPlatform: a provider or option agentwharf does not serve (named).
    """
    external = raw.get("external_model")
    if not isinstance(external, dict):
        raise InvalidParameter(f"{where}.external_model must be an object")
    where_model = f"{where}.external_model"
    model = external.get("name")
    if not isinstance(model, str) or not model.strip():
        raise InvalidParameter(f"{where_model}.name is required: the provider's model name, such as gpt-4o-mini")
    provider = external.get("provider")
    if provider in _OTHER_PROVIDERS:
        raise NotImplementedByPlatform(f"Not supported by agentwharf: {where_model}.provider {provider!r}; "
                                       f"supported: {list(PROVIDERS)} (any OpenAI-compatible server is 'custom')")
    if provider not in PROVIDERS:
        raise InvalidParameter(f"{where_model}.provider must be one of {list(PROVIDERS)}, got {provider!r}")
    task = external.get("task")
    if task not in TASKS:
        raise InvalidParameter(f"{where_model}.task must be one of {list(TASKS)}, got {task!r}")
    if provider == "custom" and external.get("custom_provider_config") is not None:
        api_base, organization, reference, key = _custom_config(external["custom_provider_config"],
                                                                f"{where_model}.custom_provider_config")
    elif external.get("openai_config") is not None:
        api_base, organization, reference, key = _openai_config(external["openai_config"], f"{where_model}.openai_config",
                                                                provider)
    else:
        wanted = "openai_config" if provider == "openai" else "openai_config or custom_provider_config"
        raise InvalidParameter(f"{where_model}.{wanted} is required")
    name = raw.get("name") or model.strip().replace("/", "-").replace(":", "-")
    if not isinstance(name, str) or not _ENTITY_NAME.match(name):
        raise InvalidParameter(f"{where}.name must be 1-63 letters, digits, '-', '_' or '.', starting with a letter or "
                               f"digit, got {name!r}")
    return ExternalModelSpec(name=name, model=model.strip(), provider=provider, task=task, api_base=api_base,
                             organization=organization, key_reference=reference, key=key)


def from_stored(name: str, stored: dict) -> ExternalModelSpec:
    """The spec a served entity row keeps (``ServedEntity.external_model``), without its key."""
    config = stored.get("openai_config", {})
    return ExternalModelSpec(name=name, model=stored["name"], provider=stored["provider"], task=stored["task"],
                             api_base=config.get("openai_api_base"), organization=config.get("openai_organization"),
                             key_reference=stored.get("key_reference"))


def to_stored(spec: ExternalModelSpec, mlflow_ids: dict[str, Any]) -> dict[str, Any]:
    """What a served entity row keeps: the public spec, the reference, MLflow's ids."""
    public = spec.public()
    return {**public, "key_reference": spec.key_reference, "mlflow": mlflow_ids}
