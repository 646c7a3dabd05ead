"""Review rules: an endpoint's traces that match an MLflow trace filter (negative user feedback,
``feedback.thumbs = 'false'``; a failing scorer, ``feedback.safety = 'no'``; ...) go to a
labeling session's review queue as they appear, for people to label; ``agentwharf datasets
add-from-traces`` then merges the labelled expectations into the golden dataset, so the next
``agentwharf eval`` includes them (issue 14, the guide's step 9).

The session is a labeling session of the endpoint's experiment (``mlflow.genai.labeling``; its
review queue has the session's name), made before the rule (``agentwharf review add-rule``
makes it if needed). The quality loop runs every rule each interval over the traces since the
rule was made (up to ``LOOKBACK_MS`` back), adding each matching trace once (a trace that
matches only later, when its feedback arrives, is added then).
"""

from __future__ import annotations

import logging
import time
import uuid

from sqlalchemy import select

from agentwharf.errors import AlreadyExists, InvalidParameter, NotFound
from agentwharf.store.database import Database
from agentwharf.store.models import Endpoint, ReviewRule, ReviewRuleItem

log = logging.getLogger("agentwharf.quality")

LOOKBACK_MS = 7 * 86_400_000
MAX_TRACES_PER_RUN = 500


def _view(rule: ReviewRule) -> dict:
    found = {"id": rule.id, "endpoint": rule.endpoint, "name": rule.name, "filter_string": rule.filter_string,
             "session": rule.session_name, "review_queue_id": rule.queue_id, "traces_added": rule.traces_added,
             "created_by": rule.created_by, "created_at": rule.created_at, "last_run_ms": rule.last_run_ms}
    if rule.last_error:
        found["last_error"] = rule.last_error
    return found


def _queue_id(store, experiment_id: str, session: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return store.get_review_queue_by_name(experiment_id, name=session).queue_id
    except MlflowException:
        raise NotFound(f"The endpoint's experiment has no labeling session {session!r}: create it first "
                       "(mlflow.genai.labeling.create_labeling_session, or agentwharf review add-rule)") from None


def _check_filter(store, experiment_id: str, filter_string: object) -> str:
    from mlflow.exceptions import MlflowException

    if not isinstance(filter_string, str) or not filter_string.strip():
        raise InvalidParameter("filter_string must be an MLflow trace filter, such as feedback.thumbs = 'false'")
    try:
        store.search_traces(experiment_ids=[experiment_id], filter_string=filter_string, max_results=1)
    except MlflowException as error:
        raise InvalidParameter(f"filter_string {filter_string!r}: {error.message}") from None
    return filter_string


def create(db: Database, store, endpoint: str, experiment_id: str, body: dict, who: str) -> dict:
    """Raises:
        InvalidParameter: a missing name or a filter MLflow cannot run.
        NotFound: no labeling session of that name in the endpoint's experiment.
        AlreadyExists: the endpoint has a rule of that name.
    """
    name, session = body.get("name"), body.get("session")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise InvalidParameter("name must be 1-128 characters")
    if not isinstance(session, str) or not session:
        raise InvalidParameter("session must name a labeling session of the endpoint's experiment")
    filter_string = _check_filter(store, experiment_id, body.get("filter_string"))
    queue_id = _queue_id(store, experiment_id, session)
    with db.session() as db_session:
        if db_session.scalar(select(ReviewRule.id).where(ReviewRule.endpoint == endpoint, ReviewRule.name == name)):
            raise AlreadyExists(f"Endpoint {endpoint!r} has a review rule named {name!r} already")
        rule = ReviewRule(id=uuid.uuid4().hex, endpoint=endpoint, name=name, filter_string=filter_string,
                          queue_id=queue_id, session_name=session, created_by=who or "-", created_at=int(time.time() * 1000),
                          traces_added=0)
        db_session.add(rule)
        db_session.flush()
        return _view(rule)


def list_rules(db: Database, endpoint: str) -> list[dict]:
    with db.session() as session:
        return [_view(r) for r in session.scalars(select(ReviewRule).where(ReviewRule.endpoint == endpoint)
                                                  .order_by(ReviewRule.name))]


def delete(db: Database, endpoint: str, name: str) -> None:
    with db.session() as session:
        rule = session.scalar(select(ReviewRule).where(ReviewRule.endpoint == endpoint, ReviewRule.name == name))
        if rule is None:
            raise NotFound(f"Endpoint {endpoint!r} has no review rule named {name!r}")
        session.execute(ReviewRuleItem.__table__.delete().where(ReviewRuleItem.rule_id == rule.id))
        session.delete(rule)


def run(db: Database, store) -> int:
    """Run every rule once. Returns how many traces were added (all rules)."""
    with db.session() as session:
        rules = [(r.id, r.endpoint, r.filter_string, r.queue_id, r.created_at) for r in session.scalars(select(ReviewRule))]
        experiments = dict(session.execute(select(Endpoint.name, Endpoint.experiment_id)).all())
    added = 0
    for rule_id, endpoint, filter_string, queue_id, created_at in rules:
        experiment_id = experiments.get(endpoint)
        if experiment_id is None:
            continue
        try:
            added += _run_rule(db, store, rule_id, experiment_id, filter_string, queue_id, created_at)
            error = None
        except Exception as failure:  # a queue deleted, a filter MLflow no longer takes: said on the rule
            log.warning("review rule %s of %s failed: %s", rule_id, endpoint, failure)
            error = str(failure)[:2000]
        with db.session() as session:
            rule = session.get(ReviewRule, rule_id)
            if rule is not None:
                rule.last_run_ms, rule.last_error = int(time.time() * 1000), error
    return added


def _run_rule(db: Database, store, rule_id: str, experiment_id: str, filter_string: str, queue_id: str,
              created_at: int) -> int:
    since = max(created_at, int(time.time() * 1000) - LOOKBACK_MS)
    infos, _ = store.search_traces(experiment_ids=[experiment_id], max_results=MAX_TRACES_PER_RUN,
                                   filter_string=f"{filter_string} AND trace.timestamp_ms >= {since}")
    ids = [info.trace_id for info in infos]
    if not ids:
        return 0
    with db.session() as session:
        seen = set(session.scalars(select(ReviewRuleItem.trace_id).where(ReviewRuleItem.rule_id == rule_id,
                                                                          ReviewRuleItem.trace_id.in_(ids))))
    new = [trace_id for trace_id in ids if trace_id not in seen]
    if not new:
        return 0
    store.add_items_to_review_queue(queue_id, item_ids=new)  # idempotent in MLflow
    with db.session() as session:
        session.add_all(ReviewRuleItem(rule_id=rule_id, trace_id=trace_id) for trace_id in new)
        rule = session.get(ReviewRule, rule_id)
        if rule is not None:
            rule.traces_added += len(new)
    log.info("review rule %s sent %d trace(s) to review queue %s", rule_id, len(new), queue_id)
    return len(new)
