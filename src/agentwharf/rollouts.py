"""What a quality-gated rollout asks for: the shapes ``agents.deploy(rollout=...)`` sends and the
control plane checks. Client-safe (no server imports), so scripts build them without the
``server`` extra.

    from agentwharf.agents import Gate, Rollout, deploy

    deploy("main.default.echo", "2", rollout=Rollout(
        canary_percent=10, min_requests=200, max_duration="2h",
        gates=[Gate(scorer="safety", min_pass_rate=0.98),
               Gate(metric="error_rate", max=0.01),
               Gate(metric="p95_latency_ms", max_ratio=1.2)]))

The candidate takes ``canary_percent`` of the traffic; the version that had it keeps the rest.
Each gate compares the two over the same window (since the current step began). When every gate
holds with enough evidence, traffic steps up (``steps``, default canary -> 50) and finally to
100%; when any gate fails with enough evidence, all traffic returns to the current version at
once and the candidate stays served at 0% for inspection.

A shadow rollout (``Rollout(shadow_percent=100, gates=[...])``) first earns its traffic without
answering anyone: the candidate stays at 0% and gets a copy of ``shadow_percent`` of the live
requests, whose answers are recorded, scored and judged but never returned. When every gate
holds on the shadow's figures the candidate is promoted: to ``steps`` (a canary, judged again
on live traffic) when the rollout has them (``canary_percent`` or ``steps``), else straight to
100%. When a gate fails, the shadow stops and live traffic never changed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from agentwharf.errors import InvalidParameter

#: Metrics a gate can bound, read off the inference table for each version.
METRICS = ("error_rate", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms")
#: Default evidence a scorer gate needs on the candidate before it may decide.
SCORER_MIN_SAMPLES = 20
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


@dataclass(frozen=True)
class Gate:
    """One condition the candidate must meet, on a scorer's results or a serving metric.

    A scorer gate (``scorer=``) reads the feedback that scorer left on each version's traces:
    ``min_pass_rate`` is an absolute floor, ``min_ratio`` a floor relative to the current
    version's pass rate. A value passes when it is true, ``"yes"`` or ``"pass"`` (MLflow's
    judges' spellings), or a number >= ``pass_threshold``.

    A metric gate (``metric=``, one of ``METRICS``) bounds the candidate: ``max`` absolutely,
    ``max_ratio`` relative to the current version (``p95_latency_ms`` at most 1.2x).

    ``min_samples``: how many results the gate needs on the candidate before it may pass or
    fail (default: the rollout's ``min_requests`` for a metric, 20 for a scorer).
    """

    scorer: str | None = None
    metric: str | None = None
    min_pass_rate: float | None = None
    min_ratio: float | None = None
    max: float | None = None
    max_ratio: float | None = None
    pass_threshold: float = 0.5
    min_samples: int | None = None

    @property
    def label(self) -> str:
        bounds = [f"{k}={v}" for k, v in (("min_pass_rate", self.min_pass_rate), ("min_ratio", self.min_ratio),
                                          ("max", self.max), ("max_ratio", self.max_ratio)) if v is not None]
        return f"{self.scorer or self.metric} {' '.join(bounds)}"


@dataclass(frozen=True)
class Rollout:
    """A canary or shadow rollout: see the module's doc. ``canary_percent``: the candidate's
    first share of live traffic (10 unless the rollout is a shadow one). ``shadow_percent``: the
    share of live requests copied to the candidate while it earns its first share.
    ``max_duration``: seconds, or ``"90m"``, ``"2h"``; past it without a promotion the candidate
    is rolled back (a rollout never promotes on too little evidence). ``notify_url``: a webhook
    told of every decision (JSON, retried)."""

    canary_percent: int | None = None
    min_requests: int = 200
    max_duration: str | float = "2h"
    gates: list[Gate] = field(default_factory=list)
    steps: list[int] | None = None
    notify_url: str | None = None
    shadow_percent: int | None = None

    @property
    def stages(self) -> list[int]:
        """The candidate's live traffic share at each step of the rollout: a shadow rollout
        starts with a stage at 0% (shadowed), then its canary steps, if any."""
        steps = list(self.steps or [])
        return [0, *steps] if self.shadow_percent else steps

    def shadowing(self, step: int) -> bool:
        """Whether live requests are copied to the candidate at ``step``."""
        return bool(self.shadow_percent) and step == 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["gates"] = [{k: v for k, v in asdict(g).items() if v is not None} for g in self.gates]
        return {k: v for k, v in data.items() if v is not None}


def _number(raw: Any, what: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidParameter(f"{what} must be a number, got {raw!r}")
    if (low is not None and raw < low) or (high is not None and raw > high):
        raise InvalidParameter(f"{what} must be between {low} and {high}, got {raw!r}")
    return float(raw)


def _whole(raw: Any, what: str, low: int, high: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise InvalidParameter(f"{what} must be a whole number from {low} to {high}, got {raw!r}")
    return raw


def duration_seconds(raw: Any) -> float:
    """``7200``, ``"7200"``, ``"120m"``, ``"2h"`` -> seconds."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw > 0:
        return float(raw)
    match = _DURATION.match(raw) if isinstance(raw, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise InvalidParameter(f"rollout.max_duration must be a positive number of seconds or like '90m', '2h', got {raw!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_gate(raw: Any, index: int) -> Gate:
    where = f"rollout.gates[{index}]"
    if not isinstance(raw, dict):
        raise InvalidParameter(f"{where} must be an object, got {raw!r}")
    unknown = sorted(set(raw) - {f for f in Gate.__dataclass_fields__})
    if unknown:
        raise InvalidParameter(f"{where} has unknown fields {unknown}")
    scorer, metric = raw.get("scorer"), raw.get("metric")
    if (scorer is None) == (metric is None):
        raise InvalidParameter(f"{where} needs exactly one of 'scorer' (a registered scorer's name) or 'metric' {list(METRICS)}")
    if scorer is not None and (not isinstance(scorer, str) or not scorer.strip()):
        raise InvalidParameter(f"{where}.scorer must be a scorer's name, got {scorer!r}")
    if metric is not None and metric not in METRICS:
        raise InvalidParameter(f"{where}.metric must be one of {list(METRICS)}, got {metric!r}")
    allowed = ("min_pass_rate", "min_ratio") if scorer else ("max", "max_ratio")
    refused = [k for k in ("min_pass_rate", "min_ratio", "max", "max_ratio") if k in raw and k not in allowed]
    if refused or not any(k in raw for k in allowed):
        raise InvalidParameter(f"{where} on a {'scorer' if scorer else 'metric'} takes {' or '.join(allowed)}"
                               + (f", not {refused}" if refused else ""))
    bounds = {k: _number(raw[k], f"{where}.{k}", 0, None if k != "min_pass_rate" else 1) for k in allowed if k in raw}
    min_samples = raw.get("min_samples")
    return Gate(scorer=scorer, metric=metric, **bounds,
                pass_threshold=_number(raw.get("pass_threshold", 0.5), f"{where}.pass_threshold"),
                min_samples=None if min_samples is None else _whole(min_samples, f"{where}.min_samples", 1, 10**7))


def parse_rollout(raw: Any) -> Rollout:
    """A rollout request as JSON -> ``Rollout``; every mistake named.

    Raises:
        InvalidParameter: a field is missing, unknown or out of range.
    """
    if not isinstance(raw, dict):
        raise InvalidParameter(f"rollout must be an object, got {raw!r}")
    unknown = sorted(set(raw) - set(Rollout.__dataclass_fields__))
    if unknown:
        raise InvalidParameter(f"rollout has unknown fields {unknown}; it takes {sorted(Rollout.__dataclass_fields__)}")
    shadow = raw.get("shadow_percent")
    shadow = None if shadow is None else _whole(shadow, "rollout.shadow_percent", 1, 100)
    canary, steps = _canary_steps(raw, shadow is not None)
    gates = raw.get("gates", [])
    if not isinstance(gates, list) or not gates:
        raise InvalidParameter("rollout.gates must list at least one gate: a rollout with nothing to check is a plain deploy")
    notify = raw.get("notify_url")
    if notify is not None and (not isinstance(notify, str) or not notify.startswith(("http://", "https://"))):
        raise InvalidParameter(f"rollout.notify_url must be an http(s) URL, got {notify!r}")
    return Rollout(canary_percent=canary, min_requests=_whole(raw.get("min_requests", 200), "rollout.min_requests", 1, 10**7),
                   max_duration=duration_seconds(raw.get("max_duration", "2h")),
                   gates=[parse_gate(g, i) for i, g in enumerate(gates)], steps=steps, notify_url=notify,
                   shadow_percent=shadow)


def _canary_steps(raw: dict[str, Any], shadow: bool) -> tuple[int | None, list[int]]:
    """The first live share and the steps of live traffic. A canary rollout starts at 10% unless
    told; a shadow rollout has no live steps unless it asks for some (it then goes to 100% at
    once when its gates hold)."""
    canary = raw.get("canary_percent")
    if canary is None and not shadow:
        canary = 10
    if canary is not None:
        canary = _whole(canary, "rollout.canary_percent", 1, 99)
    steps = raw.get("steps")
    if steps is None:
        steps = [] if canary is None else ([canary, 50] if canary < 50 else [canary])
    if not isinstance(steps, list) or (not steps and not shadow):
        raise InvalidParameter(f"rollout.steps must be a list of percentages below 100, got {steps!r}")
    steps = [_whole(s, "rollout.steps[]", 1, 99) for s in steps]
    first = canary if canary is not None else (steps[0] if steps else None)
    if steps and (steps[0] != first or steps != sorted(set(steps))):
        raise InvalidParameter(f"rollout.steps must rise strictly and start at canary_percent ({first}), got {steps}")
    return first, steps


def rollout_from_json(data: dict[str, Any]) -> Rollout:
    """A stored (already checked) rollout back to its dataclass."""
    return Rollout(**{**data, "gates": [Gate(**g) for g in data.get("gates", [])]})
