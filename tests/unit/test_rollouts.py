"""Rollouts: what a request may ask for, how each gate judges, what the decisions add up to."""

from __future__ import annotations

import pytest

from agentwharf.cli.rollout_cmds import parse_gate as cli_gate
from agentwharf.control.rollout_gates import Figures, decide, judge, passes, percentile, stage_name
from agentwharf.errors import InvalidParameter
from agentwharf.rollouts import Gate, Rollout, duration_seconds, parse_rollout, rollout_from_json

SAFETY = {"scorer": "safety", "min_pass_rate": 0.9}


def _rollout(**overrides) -> Rollout:
    return parse_rollout({"canary_percent": 10, "min_requests": 10, "gates": [SAFETY], **overrides})


def test_defaults_step_from_the_canary_through_half_and_round_trip_through_json():
    rollout = _rollout()
    assert rollout.steps == [10, 50] and rollout.max_duration == 7200
    assert rollout_from_json(rollout.to_json()) == rollout
    assert parse_rollout({"canary_percent": 60, "gates": [SAFETY]}).steps == [60]


def test_the_client_side_dataclasses_serialize_to_what_the_server_accepts():
    built = Rollout(canary_percent=5, min_requests=50, max_duration="90m",
                    gates=[Gate(scorer="safety", min_pass_rate=0.98), Gate(metric="p95_latency_ms", max_ratio=1.2)])
    parsed = parse_rollout(built.to_json())
    assert parsed.max_duration == 5400 and parsed.gates[1].max_ratio == 1.2 and parsed.steps == [5, 50]


@pytest.mark.parametrize("raw, named", [
    ({"gates": []}, "at least one gate"),
    ({"gates": [SAFETY], "canary_percent": 0}, "canary_percent"),
    ({"gates": [SAFETY], "canary_percent": 100}, "canary_percent"),
    ({"gates": [SAFETY], "steps": [10, 5]}, "rise strictly"),
    ({"gates": [SAFETY], "steps": [20, 50]}, "start at canary_percent"),
    ({"gates": [SAFETY], "max_duration": "soon"}, "max_duration"),
    ({"gates": [SAFETY], "min_requests": 0}, "min_requests"),
    ({"gates": [SAFETY], "colour": "red"}, "unknown fields ['colour']"),
    ({"gates": [SAFETY], "shadow_percent": 0}, "shadow_percent must be a whole number from 1 to 100"),
    ({"gates": [SAFETY], "shadow_percent": 101}, "shadow_percent"),
    ({"gates": [SAFETY], "shadow_percent": "all"}, "shadow_percent"),
    ({"gates": [SAFETY], "shadow_percent": 50, "steps": [20, 10]}, "rise strictly"),
    ({"gates": [{"scorer": "safety", "max": 1}]}, "takes min_pass_rate or min_ratio"),
    ({"gates": [{"metric": "error_rate", "min_pass_rate": 0.5}]}, "takes max or max_ratio"),
    ({"gates": [{"metric": "cpu", "max": 1}]}, "metric must be one of"),
    ({"gates": [{"scorer": "s", "metric": "error_rate", "max": 1}]}, "exactly one of"),
    ({"gates": [{"scorer": "safety", "min_pass_rate": 1.5}]}, "min_pass_rate must be between"),
    ({"gates": [{"scorer": "safety", "min_pass_rate": "high"}]}, "must be a number"),
    ({"gates": [SAFETY], "notify_url": "ftp://x"}, "notify_url"),
])
def test_every_mistake_is_named(raw, named):
    with pytest.raises(InvalidParameter) as error:
        parse_rollout({"canary_percent": 10, **raw})
    assert named in error.value.message


def test_durations():
    assert duration_seconds("2h") == 7200 and duration_seconds("90m") == 5400 and duration_seconds(30) == 30
    assert duration_seconds("45") == 45 and duration_seconds("1.5d") == 129600


@pytest.mark.parametrize("value, passed", [(True, True), (False, False), ("yes", True), ("no", False), ('"yes"', True),
                                           ("true", True), (0.9, True), (0.2, False), ("0.7", True), (None, False)])
def test_what_counts_as_a_pass(value, passed):
    assert passes(value, 0.5) is passed


def test_percentile_is_nearest_rank():
    assert percentile(list(range(1, 101)), 95) == 95 and percentile([3.0], 99) == 3.0 and percentile([], 50) is None


def _figures(requests=0, errors=0, latency=1.0, **scores) -> Figures:
    return Figures(requests=requests, errors=errors, latencies_ms=[latency] * requests, scores=scores)


def test_a_gate_waits_for_its_samples_then_passes_or_fails():
    rollout, gate = _rollout(), Gate(scorer="safety", min_pass_rate=0.9, min_samples=5)
    assert judge(gate, rollout, _figures(3, safety=["yes"] * 3), _figures()).verdict == "WAITING"
    assert judge(gate, rollout, _figures(5, safety=["yes"] * 5), _figures()).verdict == "PASS"
    failed = judge(gate, rollout, _figures(5, safety=["yes", "no", "no", "yes", "yes"]), _figures())
    assert failed.verdict == "FAIL" and "0.600" in failed.reason


def test_ratio_gates_need_the_current_versions_figures_too():
    rollout, gate = _rollout(), Gate(metric="p95_latency_ms", max_ratio=1.2)
    assert judge(gate, rollout, _figures(10, latency=100), _figures(3, latency=20)).verdict == "WAITING"
    assert judge(gate, rollout, _figures(10, latency=100), _figures(30, latency=20)).verdict == "FAIL"
    assert judge(gate, rollout, _figures(10, latency=22), _figures(30, latency=20)).verdict == "PASS"
    # Sub-millisecond differences are noise, not a regression.
    assert judge(gate, rollout, _figures(10, latency=0.9), _figures(30, latency=0.3)).verdict == "PASS"


def test_error_rate_bound():
    rollout, gate = _rollout(), Gate(metric="error_rate", max=0.1)
    assert judge(gate, rollout, _figures(10, errors=2), _figures()).verdict == "FAIL"
    assert judge(gate, rollout, _figures(10, errors=1), _figures()).verdict == "PASS"


def test_decisions():
    rollout = _rollout()
    gate = Gate(scorer="safety", min_pass_rate=0.9, min_samples=5)
    good = [judge(gate, rollout, _figures(10, safety=["yes"] * 10), _figures())]
    bad = [judge(gate, rollout, _figures(5, safety=["no"] * 5), _figures())]
    waiting = [judge(gate, rollout, _figures(2, safety=["yes"] * 2), _figures())]
    assert decide(rollout, good, 10, 0, 1).action == "STEP"
    assert decide(rollout, good, 10, 1, 1).action == "PROMOTE"
    assert decide(rollout, good, 9, 0, 1).action == "HOLD"  # every gate held, but too few requests
    assert decide(rollout, bad, 5, 0, 1).action == "ROLLBACK"  # fails early, before min_requests
    assert decide(rollout, waiting, 2, 0, 1).action == "HOLD"
    expired = decide(rollout, waiting, 2, 0, 7201)
    assert expired.action == "ROLLBACK" and "not enough evidence" in expired.reason


@pytest.mark.parametrize("text, gate", [
    ("safety>=0.98", {"scorer": "safety", "min_pass_rate": 0.98}),
    ("safety >= 0.95x", {"scorer": "safety", "min_ratio": 0.95}),
    ("error_rate<=0.01", {"metric": "error_rate", "max": 0.01}),
    ("p95_latency_ms<=1.2x", {"metric": "p95_latency_ms", "max_ratio": 1.2}),
])
def test_the_clis_gate_syntax(text, gate):
    assert cli_gate(text) == gate
    parse_rollout({"gates": [gate]})  # and the server takes it


@pytest.mark.parametrize("text", ["safety", "error_rate>=0.1", "safety<=0.5", "p95<=fast"])
def test_the_cli_refuses_a_gate_it_cannot_read(text, capsys):
    import typer

    with pytest.raises(typer.Exit) as exit_:
        cli_gate(text)
    assert exit_.value.exit_code != 0 and "--gate" in capsys.readouterr().err


def test_a_shadow_rollout_shadows_first_then_goes_to_100_or_to_its_canary_steps():
    alone = parse_rollout({"shadow_percent": 100, "gates": [SAFETY]})
    assert alone.stages == [0] and alone.steps == [] and alone.canary_percent is None
    assert alone.shadowing(0) and rollout_from_json(alone.to_json()) == alone
    then_canary = parse_rollout({"shadow_percent": 30, "canary_percent": 10, "gates": [SAFETY]})
    assert then_canary.stages == [0, 10, 50] and then_canary.shadowing(0) and not then_canary.shadowing(1)
    assert parse_rollout({"shadow_percent": 100, "steps": [25], "gates": [SAFETY]}).stages == [0, 25]
    # A canary rollout is as it was: no shadow stage.
    canary = _rollout()
    assert canary.stages == [10, 50] and not canary.shadowing(0)


def test_the_client_side_shadow_rollout_is_what_the_server_accepts():
    built = Rollout(shadow_percent=100, min_requests=20, gates=[Gate(scorer="safety", min_pass_rate=0.9)])
    assert "canary_percent" not in built.to_json()
    assert parse_rollout(built.to_json()).stages == [0]


def test_a_shadow_stages_decisions_name_the_shadow():
    gate = Gate(scorer="safety", min_pass_rate=0.9, min_samples=5)
    alone = parse_rollout({"shadow_percent": 100, "min_requests": 10, "gates": [SAFETY]})
    good = [judge(gate, alone, _figures(10, safety=["yes"] * 10), _figures())]
    promoted = decide(alone, good, 10, 0, 1)
    assert promoted.action == "PROMOTE" and "held at shadow (100% of requests copied)" in promoted.reason
    stepped = parse_rollout({"shadow_percent": 50, "canary_percent": 20, "min_requests": 10, "gates": [SAFETY]})
    step = decide(stepped, good, 10, 0, 1)
    assert step.action == "STEP" and step.reason.endswith("next 20%")
    assert stage_name(stepped, 1) == "20%" and decide(stepped, good, 10, 2, 1).action == "PROMOTE"
    bad = [judge(gate, alone, _figures(5, safety=["no"] * 5), _figures())]
    assert decide(alone, bad, 5, 0, 1).action == "ROLLBACK"
