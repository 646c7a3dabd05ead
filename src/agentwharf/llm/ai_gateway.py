"""An endpoint's AI gateway settings in Databricks' shape (``PUT .../ai-gateway``), validated.

    {"rate_limits": [{"calls": 100, "tokens": 20000, "key": "user", "principal": "alice",
                      "renewal_period": "minute"}],
     "usage_tracking_config": {"enabled": true},
     "inference_table_config": {"enabled": true, "catalog_name": ..., ...},
     "guardrails": {"input": {"safety": true, "pii": {"behavior": "BLOCK"}}, "output": {...}},
     "fallback_config": {"enabled": true}}

Rate limits apply to every endpoint (token limits to LLM endpoints only: an agent's tokens are
those of the LLM endpoints it calls, which carry limits of their own). Fallbacks are MLflow's AI
Gateway's, so they apply to LLM endpoints.

Guardrails are validated in Databricks' shape but refused (501): MLflow's guardrails are judges
registered as scorers that its gateway runs with its own credentials, which agentwharf does not
wire up yet. Refusing beats storing a guardrail nobody enforces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agentwharf.errors import InvalidParameter, NotImplementedByPlatform
from agentwharf.llm.limits import RateLimit

RATE_LIMIT_KEYS = ("endpoint", "user", "service_principal")
PII_BEHAVIORS = ("BLOCK", "MASK", "NONE")
_SECTIONS = ("rate_limits", "usage_tracking_config", "inference_table_config", "guardrails", "fallback_config")


@dataclass(frozen=True)
class Guardrail:
    """One guardrail, as MLflow's AI Gateway runs it: a judge before or after the model."""

    #: ``safety`` or ``pii``.
    kind: str
    #: ``input`` (before the model) or ``output`` (after it).
    stage: str
    #: ``BLOCK`` refuses the call; ``MASK`` has the judge's model rewrite the text (MLflow's
    #: SANITIZE).
    action: str


@dataclass(frozen=True)
class AiGatewaySpec:
    rate_limits: tuple[RateLimit, ...] = ()
    usage_tracking: bool | None = None
    inference_table: dict | None = None
    guardrails: tuple[Guardrail, ...] = ()
    guardrails_json: dict | None = None
    fallback: bool | None = None
    #: Which sections the request set (a PUT replaces the whole settings, as on Databricks).
    present: frozenset[str] = field(default_factory=frozenset)

    def to_json(self) -> dict[str, Any]:
        view: dict[str, Any] = {}
        if "rate_limits" in self.present:
            view["rate_limits"] = [limit.to_json() for limit in self.rate_limits]
        if self.usage_tracking is not None:
            view["usage_tracking_config"] = {"enabled": self.usage_tracking}
        if self.inference_table is not None:
            view["inference_table_config"] = self.inference_table
        if self.guardrails_json is not None:
            view["guardrails"] = self.guardrails_json
        if self.fallback is not None:
            view["fallback_config"] = {"enabled": self.fallback}
        return view


def _enabled(raw: Any, where: str) -> bool:
    if not isinstance(raw, dict) or not isinstance(raw.get("enabled", False), bool):
        raise InvalidParameter(f"{where} must be an object with 'enabled': true or false")
    return raw.get("enabled", False)


def _count(raw: Any, where: str) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise InvalidParameter(f"{where} must be a whole number of at least 0, got {raw!r}")
    return raw


def parse_rate_limit(raw: Any, where: str, *, llm: bool) -> RateLimit:
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where} must be an object with calls and/or tokens, key and renewal_period")
    calls, tokens = _count(raw.get("calls"), f"{where}.calls"), _count(raw.get("tokens"), f"{where}.tokens")
    if calls is None and tokens is None:
        raise InvalidParameter(f"{where} needs calls or tokens (or both): how many per minute")
    if tokens is not None and not llm:
        raise InvalidParameter(f"{where}.tokens: token limits apply to LLM endpoints; an agent's tokens are those of the "
                               "LLM endpoints it calls, which have limits of their own. Limit this endpoint's calls.")
    key = str(raw.get("key", "user")).lower()
    if key == "user_group":
        raise NotImplementedByPlatform(f"Not supported by agentwharf: {where}.key 'user_group' (agentwharf has no groups); "
                                       "use 'user' or 'service_principal' with a principal, or 'endpoint'")
    if key not in RATE_LIMIT_KEYS:
        raise InvalidParameter(f"{where}.key must be one of {list(RATE_LIMIT_KEYS)}, got {raw.get('key')!r}")
    period = str(raw.get("renewal_period", "minute")).lower()
    if period != "minute":
        raise InvalidParameter(f"{where}.renewal_period must be 'minute', got {raw.get('renewal_period')!r}")
    principal = raw.get("principal")
    if principal is not None and (not isinstance(principal, str) or not principal):
        raise InvalidParameter(f"{where}.principal must be the name of a user or service principal")
    if principal is not None and key == "endpoint":
        raise InvalidParameter(f"{where}.principal: an 'endpoint' limit counts every caller together; name a principal "
                               "with key 'user' or 'service_principal'")
    return RateLimit(key=key, principal=principal, calls=calls, tokens=tokens)


def _guardrail_side(raw: Any, where: str, stage: str) -> list[Guardrail]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where} must be an object")
    for unsupported in ("invalid_keywords", "valid_topics"):
        if raw.get(unsupported):
            raise NotImplementedByPlatform(f"Not supported by agentwharf: {where}.{unsupported} (deprecated on Databricks "
                                           "too); use 'safety' or 'pii'")
    found = []
    safety = raw.get("safety", False)
    if not isinstance(safety, bool):
        raise InvalidParameter(f"{where}.safety must be true or false")
    if safety:
        found.append(Guardrail("safety", stage, "BLOCK"))
    pii = raw.get("pii")
    if pii is not None:
        behavior = pii.get("behavior", "NONE") if isinstance(pii, dict) else None
        if behavior not in PII_BEHAVIORS:
            raise InvalidParameter(f"{where}.pii.behavior must be one of {list(PII_BEHAVIORS)}, got {behavior!r}")
        if behavior != "NONE":
            found.append(Guardrail("pii", stage, behavior))
    return found


def parse_guardrails(raw: Any) -> tuple[Guardrail, ...]:
    if not isinstance(raw, dict):
        raise InvalidParameter("guardrails must be an object with 'input' and/or 'output'")
    return (*_guardrail_side(raw.get("input"), "guardrails.input", "input"),
            *_guardrail_side(raw.get("output"), "guardrails.output", "output"))


def parse_ai_gateway(raw: Any, *, llm: bool) -> AiGatewaySpec:
    """Raises:
        InvalidParameter: a field is wrong (named), or a setting does not apply to this kind
            of endpoint (fallbacks and guardrails on an agent endpoint).
        NotImplementedByPlatform: a Databricks option agentwharf does not serve (named).
    """
    if raw is None:
        return AiGatewaySpec()
    if not isinstance(raw, dict):
        raise InvalidParameter("ai_gateway must be an object")
    limits_raw = raw.get("rate_limits")
    if limits_raw is not None and not isinstance(limits_raw, list):
        raise InvalidParameter("rate_limits must be a list")
    limits = tuple(parse_rate_limit(item, f"rate_limits[{i}]", llm=llm) for i, item in enumerate(limits_raw or []))
    subjects = [(limit.key, limit.principal) for limit in limits]
    if len(set(subjects)) != len(subjects):
        raise InvalidParameter("rate_limits: each key (and principal) may appear once; put calls and tokens in one limit")
    usage = _enabled(raw["usage_tracking_config"], "usage_tracking_config") if raw.get("usage_tracking_config") is not None else None
    table = raw.get("inference_table_config")
    if table is not None and not isinstance(table, dict):
        raise InvalidParameter("inference_table_config must be an object")
    fallback = _enabled(raw["fallback_config"], "fallback_config") if raw.get("fallback_config") is not None else None
    guardrails = parse_guardrails(raw["guardrails"]) if raw.get("guardrails") is not None else ()
    if not llm and (fallback or guardrails):
        raise InvalidParameter("fallback_config and guardrails apply to LLM endpoints (external models), not to agents")
    if guardrails:
        raise NotImplementedByPlatform("Not supported by agentwharf yet: guardrails "
                                       f"({', '.join(f'{g.stage} {g.kind}' for g in guardrails)}); judge your endpoint's "
                                       "traces with MLflow's scorers instead (see README, Judges)")
    return AiGatewaySpec(rate_limits=limits, usage_tracking=usage, inference_table=table, guardrails=guardrails,
                         guardrails_json=raw.get("guardrails"), fallback=fallback,
                         present=frozenset(k for k in _SECTIONS if raw.get(k) is not None))


def from_stored(stored: dict | None, *, llm: bool) -> AiGatewaySpec:
    """The settings an endpoint row keeps (validated when they were stored)."""
    return parse_ai_gateway(stored, llm=llm) if stored else AiGatewaySpec()
