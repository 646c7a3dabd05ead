"""The console's rollout panel: an endpoint's latest rollout (running or finished) in words a
person reads at a glance, from the same view the REST API answers
(``GET /api/2.0/serving-endpoints/{name}/rollout``): the candidate against the current version,
the traffic split, the step, each gate's two figures against its bound with a verdict, and the
decision log. The console's Promote and Abort buttons post to ``console``.
"""

from __future__ import annotations

import time
from typing import Any

from agentwharf.errors import NotFound
from agentwharf.rollouts import Gate, rollout_from_json

#: What each stored verdict means to a reader (WAITING is worded from its sample counts).
_VERDICTS = {"PASS": "holds", "FAIL": "fails"}


def latest(control, endpoint: str, caller) -> dict[str, Any] | None:
    """The panel for ``endpoint``'s latest rollout, or None if it never had one."""
    if control.rollouts is None:
        return None
    try:
        view = control.rollouts.view(endpoint, caller)
    except NotFound:
        return None
    return panel(view)


def panel(view: dict[str, Any]) -> dict[str, Any]:
    rollout = rollout_from_json(view["spec"])
    window = view.get("window") or {}
    results = {g["gate"]: g for g in window.get("gates", [])}
    candidate_share = view["traffic_percentage"]
    return {
        "state": view["state"], "running": view["state"] == "RUNNING",
        "candidate": view["candidate"], "current": view["current"],
        "candidate_share": candidate_share, "current_share": 100 - candidate_share,
        "step": view["step"] + 1, "steps": rollout.steps or [], "min_requests": rollout.min_requests,
        "window": {"candidate": (window.get("candidate") or {}).get("requests", 0),
                   "current": (window.get("current") or {}).get("requests", 0)} if window else None,
        "gates": [_gate(gate, results.get(gate.label)) for gate in rollout.gates],
        "decisions": [_decision(d) for d in view.get("decisions") or []],
    }


def _gate(gate: Gate, result: dict[str, Any] | None) -> dict[str, Any]:
    result = result or {}
    return {"name": gate.scorer or gate.metric, "label": gate.label, "bound": _bound(gate),
            "candidate": _figure(gate, result.get("candidate")), "current": _figure(gate, result.get("current")),
            "verdict": _verdict(result), "verdict_class": {"PASS": "ready", "FAIL": "failed"}.get(result.get("verdict"), "not-ready"),
            "reason": result.get("reason", "")}


def _bound(gate: Gate) -> str:
    if gate.min_pass_rate is not None:
        return f"pass rate ≥ {gate.min_pass_rate:g}"
    if gate.min_ratio is not None:
        return f"pass rate ≥ {gate.min_ratio:g} × current"
    if gate.max is not None:
        return f"≤ {_number(gate, gate.max)}"
    return f"≤ {gate.max_ratio:g} × current"


def _figure(gate: Gate, value: float | None) -> str:
    return "no figure yet" if value is None else _number(gate, value)


def _number(gate: Gate, value: float) -> str:
    if gate.scorer or gate.metric == "error_rate":
        return f"{value:.4g}"
    return f"{value:.0f} ms"


def _verdict(result: dict[str, Any]) -> str:
    verdict = result.get("verdict")
    if verdict is None:
        return "not judged yet"
    if verdict in _VERDICTS:
        return _VERDICTS[verdict]
    missing = result["needed"] - result["samples"]
    # A relative gate can also wait for the current version's samples; its reason says so.
    return f"needs {missing} more sample{'' if missing == 1 else 's'}" if missing > 0 else f"waiting: {result['reason']}"


def _decision(entry: dict[str, Any]) -> dict[str, Any]:
    return {"time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry["at_ms"] / 1000)),
            "action": entry["action"], "percent": entry.get("percent"), "reason": entry.get("reason", ""),
            "by": entry.get("by") or ""}

