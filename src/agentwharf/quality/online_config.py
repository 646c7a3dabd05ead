"""``Scorer.start``/``update`` for every scorer, not only gateway judges.

MLflow's server stores a scorer's online configuration (sample rate, filter) only if the scorer's
judge is a ``gateway:/`` model, because its own job runner can run nothing else: a custom
``@scorer`` or a judge on the default model is refused with "Automatic evaluation is only
supported for scorers that use gateway models". agentwharf runs any scorer (``online``), so when
MLflow refuses for exactly that reason, after its own permission check and every other
validation (sample rate, filter syntax, experiment, scorer) have passed, the platform stores the
configuration itself: the same row in MLflow's own ``online_scoring_configs`` table, written the
way MLflow's store writes it. ``list_scorers()``, ``get_scorer`` and MLflow's UI read it back.

The one other refusal MLflow makes after that check is kept: a judge that needs expectations
(ground truth) cannot score live traces.
"""

from __future__ import annotations

import json
import uuid

from agentwharf.errors import AgentwharfError, InvalidParameter, NotFound

#: MLflow's message for the refusal this module lifts.
NOT_GATEWAY = "does not use a gateway model"


def upsert(store, experiment_id: str, scorer_name: str, sample_rate: float, filter_string: str | None) -> dict:
    """Store the configuration (replacing the scorer's earlier one). Returns MLflow's JSON form.

    Raises:
        NotFound: the scorer does not exist in the experiment.
        InvalidParameter: the scorer needs expectations.
    """
    from mlflow.store.tracking.dbmodels.models import SqlOnlineScoringConfig, SqlScorer, SqlScorerVersion

    # Errors are raised outside MLflow's session: it turns any exception inside into its own
    # INTERNAL_ERROR.
    refused: AgentwharfError | None = None
    with store.ManagedSessionMaker(read_only=False) as session:
        scorer = session.query(SqlScorer).filter(SqlScorer.experiment_id == int(experiment_id),
                                                 SqlScorer.scorer_name == scorer_name).first()
        latest = None if scorer is None else (
            session.query(SqlScorerVersion).filter(SqlScorerVersion.scorer_id == scorer.scorer_id)
            .order_by(SqlScorerVersion.scorer_version.desc()).first())
        if scorer is None:
            refused = NotFound(f"Scorer with name '{scorer_name}' not found for experiment {experiment_id}.")
        elif latest is not None and sample_rate > 0 and _needs_expectations(latest.serialized_scorer):
            refused = InvalidParameter(f"Scorer '{scorer_name}' requires expectations, but scorers with expectations "
                                       "are not currently supported for automatic evaluation.")
        else:
            session.query(SqlOnlineScoringConfig).filter(SqlOnlineScoringConfig.scorer_id == scorer.scorer_id).delete()
            config = SqlOnlineScoringConfig(online_scoring_config_id=uuid.uuid4().hex, scorer_id=scorer.scorer_id,
                                            sample_rate=float(sample_rate), experiment_id=int(experiment_id),
                                            filter_string=filter_string)
            session.add(config)
            session.flush()
            return config.to_mlflow_entity().to_dict()
    raise refused


def _needs_expectations(serialized: str) -> bool:
    """MLflow's own test (an instructions judge reading ``{{ expectations }}``), never
    rebuilding custom code here (this is the platform's process)."""
    from mlflow.genai.judges.instructions_judge import EXPECTATIONS_FIELD, InstructionsJudge
    from mlflow.genai.scorers import Scorer
    from mlflow.genai.scorers.base import _serialized_scorer_is_custom_code

    if _serialized_scorer_is_custom_code(serialized) or "instructions_judge_pydantic_data" not in json.loads(serialized):
        return False
    try:
        judge = Scorer.model_validate_json(serialized)
    except Exception:
        return False
    return isinstance(judge, InstructionsJudge) and EXPECTATIONS_FIELD in judge.get_input_fields()
