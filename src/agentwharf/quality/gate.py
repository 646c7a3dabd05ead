"""The evaluation gate (``agentwharf eval``): the same scorers, the same golden dataset, a
champion and a challenger version of a registered model, compared before the challenger takes
traffic.

Each version is evaluated with MLflow's own ``mlflow.genai.evaluate`` in a run of its own,
linked to the version (its ``LoggedModel``, through ``model_id``) and tagged with the comparison.
Predictions come from the version's own route on the platform
(``/serving-endpoints/{endpoint}/served-models/{entity}/invocations``: the version as it is
served, at 0% traffic or not) or, with ``local``, from the version loaded in this process.

The comparison is per scorer: the mean of each version's values (pass/fail as 1/0, numbers as
they are; a row a scorer failed on counts for neither), their difference, and a 95% confidence
interval of the difference by a paired bootstrap over the dataset's rows. The challenger
regresses on a scorer when its mean is below the champion's by more than the threshold.
"""

from __future__ import annotations

import importlib
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentwharf.errors import InvalidParameter, NotFound

BOOTSTRAP_SAMPLES = 2000
ROLE_TAG = "agentwharf.eval.role"
MODEL_TAG = "agentwharf.eval.model"
VERSION_TAG = "agentwharf.eval.model_version"
COMPARISON_TAG = "agentwharf.eval.comparison"


def load_scorers(specs: list[str]) -> list:
    """``module:attr`` (a scorer or a list of them; ``path/to/file.py:attr`` too) -> scorers.

    Raises:
        InvalidParameter: not ``module:attr``, or not importable, or not scorers.
    """
    from mlflow.genai.scorers import Scorer

    found: list = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise InvalidParameter(f"--scorers takes module:attr (such as my_project.scorers:SCORERS), got {spec!r}")
        try:
            module = _import(module_name)
            value = getattr(module, attr)
        except (ImportError, AttributeError, OSError) as error:
            raise InvalidParameter(f"--scorers {spec}: {type(error).__name__}: {error}") from None
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items or not all(isinstance(item, Scorer) for item in items):
            raise InvalidParameter(f"--scorers {spec} is not a scorer or a list of scorers")
        found.extend(items)
    return found


def _import(name: str):
    if name.endswith(".py"):
        path = Path(name).resolve()
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    if "" not in sys.path:
        sys.path.insert(0, "")  # the project the command runs in, as `python -m` would
    return importlib.import_module(name)


def number(value: Any) -> float | None:
    """A scorer's value as a number for means (pass/fail 1/0); None for text and errors."""
    from agentwharf.quality.results import outcome_of

    outcome, figure = outcome_of(value, False)
    return figure if outcome in ("pass", "fail", "value") else None


def row_key(inputs: Any) -> str:
    return json.dumps(inputs, sort_keys=True, default=str)


@dataclass
class VersionResult:
    """One version's evaluation: its run, and each scorer's value per dataset row."""

    version: str
    run_id: str
    metrics: dict[str, float]
    #: scorer -> row key -> number (None: the scorer failed or gave text).
    values: dict[str, dict[str, float | None]] = field(default_factory=dict)


def values_of(result_df) -> dict[str, dict[str, float | None]]:
    """Per scorer, per dataset row (keyed by its inputs), the numeric value."""
    found: dict[str, dict[str, float | None]] = {}
    if result_df is None:
        return found
    seen: dict[str, int] = {}
    keys = []
    # MLflow's table of traces: a row's inputs are its trace's request.
    column = "inputs" if "inputs" in result_df.columns else "request"
    for inputs in result_df[column]:
        base = row_key(inputs)
        seen[base] = seen.get(base, 0) + 1
        keys.append(f"{base}#{seen[base]}")  # the same inputs twice are two rows
    for column in [c for c in result_df.columns if c.endswith("/value")]:
        name = column.removesuffix("/value")
        found[name] = {key: number(value) for key, value in zip(keys, result_df[column], strict=True)}
    return found


@dataclass
class Comparison:
    scorer: str
    champion: float | None
    challenger: float | None
    delta: float | None
    low: float | None
    high: float | None
    rows: int
    regressed: bool


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def compare(champion: VersionResult, challenger: VersionResult, threshold: float,
            samples: int = BOOTSTRAP_SAMPLES, seed: int = 14) -> list[Comparison]:
    """Each scorer both versions have: means, the delta (challenger - champion), its 95%
    bootstrap interval over the rows both scored, and whether it regressed past ``threshold``."""
    rng = random.Random(seed)
    found = []
    for name in sorted(set(champion.values) & set(challenger.values)):
        a, b = champion.values[name], challenger.values[name]
        mean_a = _mean([v for v in a.values() if v is not None])
        mean_b = _mean([v for v in b.values() if v is not None])
        paired = [(a[k], b[k]) for k in a if k in b and a[k] is not None and b[k] is not None]
        low = high = None
        if paired:
            deltas = sorted(sum(y - x for x, y in (rng.choice(paired) for _ in paired)) / len(paired)
                            for _ in range(samples))
            low, high = deltas[int(0.025 * samples)], deltas[int(0.975 * samples) - 1]
        delta = None if mean_a is None or mean_b is None else mean_b - mean_a
        found.append(Comparison(name, mean_a, mean_b, delta, low, high, len(paired),
                                regressed=delta is not None and delta < -threshold))
    return found


def _figure(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def markdown(model: str, champion: VersionResult, challenger: VersionResult, rows: list[Comparison],
             threshold: float, dataset: str) -> str:
    """The summary for a pull request or ``$GITHUB_STEP_SUMMARY``."""
    failed = [r.scorer for r in rows if r.regressed]
    verdict = (f"**FAILED**: version {challenger.version} regresses on {', '.join(failed)}" if failed
               else f"**PASSED**: version {challenger.version} does not regress")
    lines = [f"## agentwharf eval: {model} v{challenger.version} vs v{champion.version}", "",
             f"{verdict} (threshold {threshold:g}, dataset `{dataset}`).", "",
             f"| scorer | champion v{champion.version} | challenger v{challenger.version} | delta | 95% CI | rows | |",
             "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        interval = "-" if r.low is None else f"[{r.low:+.3f}, {r.high:+.3f}]"
        mark = ":x: regressed" if r.regressed else ":white_check_mark:"
        lines.append(f"| {r.scorer} | {_figure(r.champion)} | {_figure(r.challenger)} | {_figure(r.delta, True)} | "
                     f"{interval} | {r.rows} | {mark} |")
    lines += ["", f"MLflow runs: champion `{champion.run_id}`, challenger `{challenger.run_id}`.", ""]
    return "\n".join(lines)


# -- running the evaluations ------------------------------------------------------------------------


def resolve_version(model: str, given: str | None) -> str:
    """``3``, ``@champion`` (an alias) or None (the ``champion`` alias) -> a version number.

    Raises:
        NotFound: no such alias.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if given and not given.startswith("@"):
        return str(given)
    alias = (given or "@champion")[1:]
    try:
        return str(MlflowClient().get_model_version_by_alias(model, alias).version)
    except MlflowException:
        hint = "" if given else " (give --champion VERSION, or set the alias)"
        raise NotFound(f"Model {model!r} has no alias {alias!r}{hint}") from None


def version_route(client, model: str, version: str) -> str:
    """The path of the version's own route on the platform.

    Raises:
        NotFound: the version is not deployed (deploy it, or evaluate it with --local).
    """
    deployments = client.get_deployments(model, version)
    if not deployments:
        raise NotFound(f"{model} version {version} is not deployed: deploy it (it may take 0% of the traffic) or "
                       "evaluate it locally with --local")
    path = deployments[0]["query_endpoint"]
    if "://" in path:
        path = "/" + path.split("://", 1)[1].split("/", 1)[1]
    return path


def endpoint_predict(client, path: str, on_row: Callable[[], None]) -> Callable[..., Any]:
    """predict_fn calling a version's own route on the platform (``version_route``) through ``client``."""

    def predict(**inputs):
        answer = client.request("POST", path, json=inputs)
        on_row()
        return answer

    return predict


def local_predict(model: str, version: str, on_row: Callable[[], None]) -> Callable[..., Any]:
    """predict_fn on the version loaded in this process (``mlflow.pyfunc.load_model``)."""
    import mlflow

    loaded = mlflow.pyfunc.load_model(f"models:/{model}/{version}")

    def predict(**inputs):
        answer = loaded.predict(inputs)
        on_row()
        return answer

    return predict


def evaluate_version(model: str, version: str, role: str, dataset, scorers: list, predict_fn: Callable[..., Any],
                     comparison_id: str) -> VersionResult:
    """One ``mlflow.genai.evaluate`` run for one version, linked to it."""
    import mlflow
    from mlflow import MlflowClient

    model_id = getattr(MlflowClient().get_model_version(model, version), "model_id", None)
    tags = {ROLE_TAG: role, MODEL_TAG: model, VERSION_TAG: version, COMPARISON_TAG: comparison_id}
    with mlflow.start_run(run_name=f"eval {model} v{version} ({role})", tags=tags) as run:
        result = mlflow.genai.evaluate(data=dataset, predict_fn=predict_fn, scorers=scorers, model_id=model_id)
    return VersionResult(version, run.info.run_id, dict(result.metrics), values_of(result.result_df))
