"""The console's quality panel: which rows and charts it shows for monitoring's figures."""

from __future__ import annotations

from agentwharf.web.quality_panel import NO_VERSION, _charts, _rows


def _counts(**given) -> dict:
    counts = {"count": 0, "pass": 0, "fail": 0, "value_n": 0, "value_sum": 0.0, "errors": 0, "pass_rate": None,
              "positive_rate": None, "mean": None, "error_rate": None}
    return {**counts, **given}


def test_rows_put_all_versions_first_and_name_rows_without_a_version():
    overall = {"scorers": {"safety": _counts(count=3, **{"pass": 3}, pass_rate=1.0)}, "feedback": {}}
    unnamed = {"scorers": {"safety": _counts(count=1, fail=1, pass_rate=0.0)}, "feedback": {}}
    v2 = {"scorers": {"safety": _counts(count=2, **{"pass": 2}, pass_rate=1.0), "length": _counts(count=2, value_n=2, mean=40.0)},
          "feedback": {}}
    rows = _rows("scorers", [("All versions", overall), ("", unnamed), ("v2", v2)])
    assert [(r["name"], r["version"], r["figure"]) for r in rows] == [
        ("length", "v2", "mean"), ("safety", "All versions", "pass_rate"), ("safety", NO_VERSION, "pass_rate"),
        ("safety", "v2", "pass_rate")]


def test_only_yes_no_or_numeric_results_get_a_chart():
    overall = {"scorers": {}, "feedback": {"thumbs": _counts(count=2, **{"pass": 1}, fail=1, pass_rate=0.5),
                                           "comment": _counts(count=3)}}
    rows = _rows("feedback", [("All versions", overall)])
    assert _charts(rows, "feedback") == [{"kind": "feedback", "name": "thumbs", "figure": "pass_rate"}]
