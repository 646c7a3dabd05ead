"""agentwharf.llm.ai_gateway: Databricks' ai_gateway settings, validated and given back."""

import pytest

from agentwharf.errors import InvalidParameter, NotImplementedByPlatform
from agentwharf.llm.ai_gateway import Guardrail, parse_ai_gateway, parse_guardrails
from agentwharf.llm.limits import RateLimit

FULL = {
    "rate_limits": [{"calls": 100, "tokens": 5000, "key": "user", "renewal_period": "minute"},
                    {"calls": 10, "key": "user", "principal": "alice", "renewal_period": "minute"},
                    {"tokens": 100000, "key": "endpoint", "renewal_period": "minute"}],
    "usage_tracking_config": {"enabled": True},
    "inference_table_config": {"enabled": True, "catalog_name": "main", "schema_name": "logs"},
    "guardrails": {"input": {"safety": False, "pii": {"behavior": "NONE"}}},
    "fallback_config": {"enabled": True},
}


def test_every_section_parsed_and_given_back_as_sent():
    spec = parse_ai_gateway(FULL, llm=True)
    assert spec.rate_limits == (RateLimit("user", None, 100, 5000), RateLimit("user", "alice", 10, None),
                                RateLimit("endpoint", None, None, 100000))
    assert spec.guardrails == ()
    assert spec.fallback is True and spec.usage_tracking is True
    assert spec.to_json() == FULL


def test_guardrails_are_read_in_databricks_shape_but_refused_rather_than_stored_unenforced():
    raw = {"input": {"safety": True, "pii": {"behavior": "BLOCK"}}, "output": {"pii": {"behavior": "MASK"}}}
    assert parse_guardrails(raw) == (Guardrail("safety", "input", "BLOCK"), Guardrail("pii", "input", "BLOCK"),
                                     Guardrail("pii", "output", "MASK"))
    with pytest.raises(NotImplementedByPlatform, match="guardrails .input safety, input pii, output pii."):
        parse_ai_gateway({"guardrails": raw}, llm=True)


def test_the_sdk_sends_enums_in_any_case_and_defaults_apply():
    spec = parse_ai_gateway({"rate_limits": [{"calls": 5, "key": "USER", "renewal_period": "MINUTE"}, {"calls": 1,
                                                                                                     "key": "endpoint"}]},
                            llm=False)
    assert spec.rate_limits == (RateLimit("user", None, 5, None), RateLimit("endpoint", None, 1, None))
    assert parse_ai_gateway({"rate_limits": []}, llm=True).to_json() == {"rate_limits": []}
    assert parse_ai_gateway(None, llm=True).to_json() == {}


def test_what_databricks_agents_sends_on_deploy_is_kept():
    table = {"inference_table_config": {"catalog_name": "main", "schema_name": "default", "table_name_prefix": "echo",
                                        "enabled": True}}
    assert parse_ai_gateway(table, llm=False).to_json() == table


@pytest.mark.parametrize("raw, message", [
    ({"rate_limits": {}}, "rate_limits must be a list"),
    ({"rate_limits": [{"key": "user"}]}, r"rate_limits\[0\] needs calls or tokens"),
    ({"rate_limits": [{"calls": -1, "key": "user"}]}, r"rate_limits\[0\].calls must be a whole number"),
    ({"rate_limits": [{"calls": True}]}, r"rate_limits\[0\].calls must be a whole number"),
    ({"rate_limits": [{"calls": 1, "key": "team"}]}, r"rate_limits\[0\].key must be one of"),
    ({"rate_limits": [{"calls": 1, "renewal_period": "hour"}]}, "renewal_period must be 'minute'"),
    ({"rate_limits": [{"calls": 1, "key": "endpoint", "principal": "bob"}]}, "counts every caller together"),
    ({"rate_limits": [{"calls": 1}, {"tokens": 2, "key": "user"}]}, "each key .and principal. may appear once"),
    ({"usage_tracking_config": {"enabled": "yes"}}, "usage_tracking_config must be an object"),
    ({"guardrails": {"input": {"pii": {"behavior": "REDACT"}}}}, r"guardrails.input.pii.behavior must be one of"),
    ({"guardrails": []}, "guardrails must be an object"),
    ({"inference_table_config": []}, "inference_table_config must be an object"),
])
def test_bad_settings_are_refused_by_name(raw, message):
    with pytest.raises(InvalidParameter, match=message):
        parse_ai_gateway(raw, llm=True)


def test_token_limits_fallbacks_and_guardrails_are_for_llm_endpoints():
    with pytest.raises(InvalidParameter, match="token limits apply to LLM endpoints"):
        parse_ai_gateway({"rate_limits": [{"tokens": 10, "key": "user"}]}, llm=False)
    for raw in ({"fallback_config": {"enabled": True}}, {"guardrails": {"input": {"safety": True}}}):
        with pytest.raises(InvalidParameter, match="apply to LLM endpoints"):
            parse_ai_gateway(raw, llm=False)
    assert parse_ai_gateway({"fallback_config": {"enabled": False}}, llm=False).fallback is False


@pytest.mark.parametrize("raw", [
    {"rate_limits": [{"calls": 1, "key": "user_group", "principal": "team"}]},
    {"guardrails": {"input": {"invalid_keywords": ["x"]}}},
    {"guardrails": {"output": {"valid_topics": ["x"]}}},
])
def test_what_agentwharf_does_not_serve_is_501(raw):
    with pytest.raises(NotImplementedByPlatform):
        parse_ai_gateway(raw, llm=True)
