"""The registered scorers online scoring runs, read from MLflow's own tables.

Registration is MLflow's (``Scorer.register/start/update/stop``, stored by MLflow's server in
its ``scorers``, ``scorer_versions`` and ``online_scoring_configs`` tables); this module reads
what is active the way MLflow's own scheduler does (``get_active_online_scorers``: each active
config with its scorer's latest version, gateway endpoint ids resolved to names), without the
filter MLflow adds there (gateway judges only, all its job runner can run), and sorts it:

- built-in scorers and judges (``Safety()``, ``Guidelines``, ``make_judge``...) are MLflow's
  code; they run in the scoring process, their LLM calls going to the platform's endpoints;
- custom ``@scorer`` code (any scorer whose serialized form carries source, an ensemble holding
  one included) is someone's code: it runs in the sandbox (``sandbox``), never here. This
  process never rebuilds it: it marks itself an MLflow server process
  (``_MLFLOW_SERVER_BOOT_ID``), for which MLflow deserializes such scorers as inert metadata.

Session-level scorers (multi-turn judges) are left to MLflow's own scheduler, which waits for a
session to end; online scoring here is per trace.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("agentwharf.quality.scorers")


@dataclass
class ActiveScorer:
    name: str
    experiment_id: str
    serialized: str
    sample_rate: float
    filter_string: str | None
    version: int | None
    custom: bool
    #: MLflow's scorer object (built-ins and judges; an inert handle for custom ones).
    scorer: Any = None


@dataclass
class ExperimentScorers:
    """The active trace-level scorers of one experiment, and MLflow's sampler over them."""

    experiment_id: str
    scorers: dict[str, ActiveScorer] = field(default_factory=dict)
    sampler: Any = None

    def sample(self, trace_id: str) -> list[ActiveScorer]:
        """The scorers that score this trace: MLflow's dense sampling (a hash of trace id and
        scorer name against each sample rate), so the choice is the one MLflow would make."""
        chosen = self.sampler.sample(trace_id, [s.scorer for s in self.scorers.values()])
        return [self.scorers[s.name] for s in chosen]


def is_custom_code(serialized: str) -> bool:
    from mlflow.genai.scorers.base import _serialized_scorer_is_custom_code

    return _serialized_scorer_is_custom_code(serialized)


def judge_models(serialized: str) -> list[str]:
    """The model URIs a serialized scorer's judges call (ensembles' too); empty for code and
    for judges on the default model."""
    from mlflow.genai.scorers.scorer_utils import _iter_scorer_models

    try:
        return [m for m in _iter_scorer_models(json.loads(serialized)) if m]
    except (ValueError, TypeError, AttributeError):
        return []


def active_online_scorers(store) -> list:
    """MLflow's ``get_active_online_scorers`` for every kind of scorer (``OnlineScorer``s)."""
    from mlflow.genai.scorers.online.entities import OnlineScorer
    from mlflow.store.tracking.dbmodels.models import SqlOnlineScoringConfig, SqlScorer, SqlScorerVersion
    from sqlalchemy import and_, func

    with store.ManagedSessionMaker() as session:
        latest = (session.query(SqlScorerVersion.scorer_id, func.max(SqlScorerVersion.scorer_version).label("max_version"))
                  .group_by(SqlScorerVersion.scorer_id).subquery())
        rows = (store._get_query(session, SqlOnlineScoringConfig).filter(SqlOnlineScoringConfig.sample_rate > 0)
                .join(SqlScorer, SqlOnlineScoringConfig.scorer_id == SqlScorer.scorer_id)
                .join(latest, SqlScorer.scorer_id == latest.c.scorer_id)
                .join(SqlScorerVersion, and_(SqlScorerVersion.scorer_id == latest.c.scorer_id,
                                             SqlScorerVersion.scorer_version == latest.c.max_version))
                .with_entities(SqlOnlineScoringConfig, SqlScorer, SqlScorerVersion).all())
        return [OnlineScorer(name=scorer.scorer_name,
                             serialized_scorer=store._resolve_endpoint_in_serialized_scorer(version.serialized_scorer),
                             online_config=config.to_mlflow_entity(), scorer_version=version.scorer_version)
                for config, scorer, version in rows]


def load_active(store) -> dict[str, ExperimentScorers]:
    """Every experiment's active trace-level scorers (sample rate above 0), latest versions."""
    from mlflow.genai.scorers import Scorer
    from mlflow.genai.scorers.online.sampler import OnlineScorerSampler

    by_experiment: dict[str, ExperimentScorers] = {}
    online: dict[str, list] = {}
    for entry in active_online_scorers(store):
        experiment_id = str(entry.online_config.experiment_id)
        try:
            scorer = Scorer.model_validate_json(entry.serialized_scorer)
        except Exception as error:  # a scorer MLflow itself cannot read: skipped, as MLflow's scheduler does
            log.warning("skipping scorer %r of experiment %s: %s", entry.name, experiment_id, error)
            continue
        if scorer.is_session_level_scorer:
            continue
        active = ActiveScorer(name=scorer.name, experiment_id=experiment_id, serialized=entry.serialized_scorer,
                              sample_rate=float(entry.online_config.sample_rate), filter_string=entry.online_config.filter_string,
                              version=entry.scorer_version, custom=is_custom_code(entry.serialized_scorer), scorer=scorer)
        by_experiment.setdefault(experiment_id, ExperimentScorers(experiment_id)).scorers[active.name] = active
        online.setdefault(experiment_id, []).append(entry)
    for experiment_id, group in by_experiment.items():
        group.sampler = OnlineScorerSampler(online[experiment_id])
    return by_experiment
