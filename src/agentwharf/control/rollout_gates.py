"""Judging a rollout: each gate on the candidate's and the current version's figures over the
same window, and the decision they add up to. Pure functions, so every rule has a unit test.

Safe by construction: a gate without enough samples is WAITING, and only all gates PASSING with
the rollout's ``min_requests`` answered may step traffic up; a gate may FAIL as soon as it has
its own evidence, so a bad candidate is rolled back early, after few requests.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from agentwharf.rollouts import SCORER_MIN_SAMPLES, Gate, Rollout

#: Latencies below this are noise for a ratio (a 0.3 ms vs 0.5 ms p95 is no regression).
LATENCY_FLOOR_MS = 5.0
_PASSING_WORDS = {"yes", "pass", "passed", "true", "correct", "safe"}


@dataclass
class Figures:
    """One version's window: its answered requests and its scorers' results."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    #: scorer name -> list of feedback values (JSON-decoded), one per scored trace
    scores: dict[str, list[Any]] = field(default_factory=dict)

    def metric(self, name: str) -> float | None:
        if not self.requests:
            return None
        if name == "error_rate":
            return self.errors / self.requests
        return percentile(self.latencies_ms, {"p50_latency_ms": 50, "p95_latency_ms": 95, "p99_latency_ms": 99}[name])

    def samples(self, gate: Gate) -> int:
        return len(self.scores.get(gate.scorer, [])) if gate.scorer else self.requests

    def pass_rate(self, gate: Gate) -> float | None:
        values = self.scores.get(gate.scorer, [])
        return sum(passes(v, gate.pass_threshold) for v in values) / len(values) if values else None

    def value(self, gate: Gate) -> float | None:
        return self.pass_rate(gate) if gate.scorer else self.metric(gate.metric)

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "p95_latency_ms": _round(self.metric("p95_latency_ms")),
                "scored": {name: len(values) for name, values in self.scores.items()}}


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def passes(value: Any, threshold: float) -> bool:
    """Whether one feedback value counts as a pass: true, a passing word, or a number >= threshold."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value.strip().lower() in _PASSING_WORDS
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value >= threshold
    return isinstance(value, str) and value.strip().lower() in _PASSING_WORDS


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class GateResult:
    gate: str
    verdict: str  # PASS, FAIL or WAITING
    candidate: float | None
    current: float | None
    samples: int
    needed: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"gate": self.gate, "verdict": self.verdict, "candidate": _round(self.candidate),
                "current": _round(self.current), "samples": self.samples, "needed": self.needed, "reason": self.reason}


def needed_samples(gate: Gate, rollout: Rollout) -> int:
    if gate.min_samples is not None:
        return gate.min_samples
    return SCORER_MIN_SAMPLES if gate.scorer else rollout.min_requests


def _holds(gate: Gate, candidate: float, current: float | None) -> tuple[bool | None, str]:
    """(holds, why); holds is None when the comparison needs the current version's value."""
    if gate.min_pass_rate is not None:
        return candidate >= gate.min_pass_rate, f"pass rate {candidate:.3f} vs floor {gate.min_pass_rate}"
    if gate.max is not None:
        return candidate <= gate.max, f"{gate.metric} {candidate:.4g} vs max {gate.max}"
    if current is None:
        return None, "no figure for the current version yet"
    if gate.min_ratio is not None:
        return candidate >= current * gate.min_ratio, f"pass rate {candidate:.3f} vs current {current:.3f} x {gate.min_ratio}"
    if gate.metric != "error_rate":
        candidate, current = max(candidate, LATENCY_FLOOR_MS), max(current, LATENCY_FLOOR_MS)
    holds = candidate <= current * gate.max_ratio or (gate.metric == "error_rate" and candidate == 0)
    return holds, f"{gate.metric} {candidate:.4g} vs current {current:.4g} x {gate.max_ratio}"


def judge(gate: Gate, rollout: Rollout, candidate: Figures, current: Figures) -> GateResult:
    needed = needed_samples(gate, rollout)
    samples, value, base = candidate.samples(gate), candidate.value(gate), current.value(gate)
    relative = gate.min_ratio is not None or gate.max_ratio is not None
    if samples < needed or value is None:
        return GateResult(gate.label, "WAITING", value, base, samples, needed, f"{samples} of {needed} samples")
    if relative and current.samples(gate) < needed:
        return GateResult(gate.label, "WAITING", value, base, samples, needed,
                          f"the current version has {current.samples(gate)} of {needed} samples")
    holds, why = _holds(gate, value, base)
    verdict = "WAITING" if holds is None else ("PASS" if holds else "FAIL")
    return GateResult(gate.label, verdict, value, base, samples, needed, why)


@dataclass
class Decision:
    action: str  # HOLD, STEP, PROMOTE or ROLLBACK
    reason: str


def stage_name(rollout: Rollout, step: int) -> str:
    """``10%``, or ``shadow (100% of requests copied)`` for a shadow rollout's first stage."""
    if rollout.shadowing(step):
        return f"shadow ({rollout.shadow_percent}% of requests copied)"
    return f"{rollout.stages[step]}%"


def decide(rollout: Rollout, results: list[GateResult], candidate_requests: int, step: int, elapsed_seconds: float) -> Decision:
    """What to do now, at ``step`` (index into ``rollout.stages``). In a shadow stage the
    candidate's figures are its shadow answers, so the same rules hold."""
    failed = [r for r in results if r.verdict == "FAIL"]
    if failed:
        return Decision("ROLLBACK", "; ".join(f"gate {r.gate} failed: {r.reason}" for r in failed))
    waiting = [r for r in results if r.verdict == "WAITING"]
    if not waiting and candidate_requests >= rollout.min_requests:
        held = f"every gate held at {stage_name(rollout, step)} ({', '.join(r.gate for r in results)})"
        if step + 1 < len(rollout.stages):
            return Decision("STEP", f"{held}; next {rollout.stages[step + 1]}%")
        return Decision("PROMOTE", held)
    if elapsed_seconds > float(rollout.max_duration):
        missing = ", ".join(f"{r.gate} ({r.reason})" for r in waiting) or f"{candidate_requests} of {rollout.min_requests} requests"
        return Decision("ROLLBACK", f"not enough evidence within max_duration {rollout.max_duration:g}s: {missing}")
    return Decision("HOLD", "waiting for evidence")
