"""agentwharf.llm.spec: Databricks' external_model, validated; a key never shows."""

import pytest

from agentwharf.control.config import parse_config
from agentwharf.errors import InvalidParameter, NotImplementedByPlatform
from agentwharf.llm.spec import ExternalModelSpec, from_stored, parse_external_model, to_stored

SIZES = {"Small": 1}


def entity(**external):
    base = {"name": "gpt-4o-mini", "provider": "openai", "task": "llm/v1/chat",
            "openai_config": {"openai_api_key_plaintext": "sk-secret-value-123"}}
    return {"external_model": {**base, **external}}


def test_openai_with_a_plaintext_key():
    spec = parse_external_model({"name": "main", **entity()}, "served_entities[0]")
    assert (spec.name, spec.model, spec.provider, spec.task, spec.api_base) == ("main", "gpt-4o-mini", "openai",
                                                                               "llm/v1/chat", None)
    assert spec.key == "sk-secret-value-123" and spec.key_reference is None
    assert "sk-secret" not in repr(spec) and "sk-secret" not in str(spec.public())


def test_custom_provider_with_a_secret_reference_and_a_base_url():
    spec = parse_external_model(entity(provider="custom", openai_config={
        "openai_api_base": "http://127.0.0.1:8000/v1/", "openai_api_key": "{{secrets/team/vllm}}"}), "e")
    assert spec.api_base == "http://127.0.0.1:8000/v1" and spec.key_reference == "team/vllm" and spec.key is None
    assert spec.name == "gpt-4o-mini"  # the entity's name defaults to the model's
    assert spec.public()["openai_config"] == {"openai_api_base": "http://127.0.0.1:8000/v1",
                                              "openai_api_key": "{{secrets/team/vllm}}"}


def test_databricks_custom_provider_config_with_a_bearer_token():
    spec = parse_external_model(entity(provider="custom", openai_config=None, custom_provider_config={
        "custom_provider_url": "https://llm.internal/v1", "bearer_token_auth": {"token_plaintext": "tok-123456789"}}), "e")
    assert spec.api_base == "https://llm.internal/v1" and spec.key == "tok-123456789"


def test_a_local_server_may_need_no_key():
    spec = parse_external_model(entity(provider="custom", name="llama3.1:8b",
                                       openai_config={"openai_api_base": "http://127.0.0.1:11434/v1"}), "e")
    assert spec.key is None and spec.key_reference is None and spec.name == "llama3.1-8b"


@pytest.mark.parametrize("external, message", [
    ({"name": ""}, "external_model.name is required"),
    ({"provider": "mystery"}, "provider must be one of"),
    ({"task": "llm/v1/images"}, "task must be one of"),
    ({"openai_config": None}, "openai_config is required"),
    ({"openai_config": {"openai_api_key": "sk-plain"}}, "must be a secret reference"),
    ({"openai_config": {"openai_api_key": "{{secrets/a}}", "openai_api_key_plaintext": "x"}}, "not both"),
    ({"openai_config": {"openai_api_key_plaintext": "  "}}, "must be a non-empty string"),
    ({"openai_config": {"openai_api_base": "ftp://x", "openai_api_key_plaintext": "k"}}, "must be an http(s) URL"),
    ({"provider": "custom", "openai_config": {"openai_api_key_plaintext": "k"}}, "openai_api_base is required for provider 'custom'"),
])
def test_bad_external_models_are_refused_by_name(external, message):
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_external_model(entity(**external), "served_entities[0]")


@pytest.mark.parametrize("external", [
    {"provider": "anthropic"},
    {"openai_config": {"openai_api_type": "azure", "openai_api_key_plaintext": "k"}},
    {"provider": "custom", "openai_config": None, "custom_provider_config": {
        "custom_provider_url": "https://x/v1", "api_key_auth": {"key": "X-Key", "value_plaintext": "v"}}},
])
def test_what_agentwharf_does_not_serve_is_501_with_its_name(external):
    with pytest.raises(NotImplementedByPlatform, match="Not supported by agentwharf"):
        parse_external_model(entity(**external), "e")


def test_stored_form_keeps_no_key_and_comes_back():
    spec = parse_external_model({"name": "main", **entity(openai_config={
        "openai_api_base": "https://api.example/v1", "openai_api_key": "{{secrets/s/k}}", "openai_organization": "org"})}, "e")
    stored = to_stored(spec, {"model_definition_id": "d-1", "secret_id": "s-1", "owns_secret": False})
    again = from_stored("main", stored)
    assert again == spec and again.same_provider_settings(spec)
    plain = parse_external_model({"name": "main", **entity()}, "e")
    assert "sk-secret" not in str(to_stored(plain, {}))


def test_a_config_is_of_one_kind_and_one_task():
    llm = {"name": "a", **entity()}
    agent = {"entity_name": "main.default.echo", "entity_version": "1"}
    with pytest.raises(InvalidParameter, match="either registered models or external models"):
        parse_config({"served_entities": [llm, agent], "traffic_config": {"routes": [
            {"served_model_name": "a", "traffic_percentage": 100}, {"served_model_name": "main-default-echo_1",
                                                                    "traffic_percentage": 0}]}}, SIZES, 15)
    other = {"name": "b", **entity(task="llm/v1/embeddings")}
    with pytest.raises(InvalidParameter, match="must share a task"):
        parse_config({"served_entities": [llm, other], "traffic_config": {"routes": [
            {"served_model_name": "a", "traffic_percentage": 50}, {"served_model_name": "b", "traffic_percentage": 50}]}},
            SIZES, 15)
    spec = parse_config({"served_entities": [llm]}, SIZES, 15)
    assert spec.task == "llm/v1/chat" and isinstance(spec.entities[0], ExternalModelSpec) and spec.routes == (("a", 100),)
    assert parse_config({"served_entities": [agent]}, SIZES, 15).task is None
