"""Online scoring of live traces, seconds after the writer stores them.

MLflow's own scheduler looks once a minute at traces older than a five-minute completion buffer;
the platform knows when a trace is complete (the writer stores it whole), so this engine scores
it at once:

    writer ──(same transaction)──> aw_scoring_queue ──poll (0.1 s)──> OnlineScoring
        sample (MLflow's sampler) ─ filter (MLflow's search) ─ fetch (MLflow's store)
        ├─ built-ins and judges: MLflow's harness in a thread pool; LLM calls to the platform
        └─ custom @scorer code: a sandboxed process per scorer (``sandbox``)
    results ──flush (0.1 s, one transaction)──> MLflow assessments + aw_monitor_scores,
                                                 finished queue rows deleted

Every sampled (trace, scorer) ends with an assessment: the scorer's, or an error assessment
(its exception, a timeout, a crash, an environment that is not ready). A queue row is deleted in
the transaction that writes its last result, so after a crash the rest is scored on restart
(results already written are not redone: ``aw_monitor_scores`` says which).
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import select

from agentwharf.quality import results as results_module
from agentwharf.quality.results import Result
from agentwharf.quality.sandbox import Job, Lane, Limits, error_feedback
from agentwharf.quality.sandbox_runner import eval_item
from agentwharf.quality.scorers import ActiveScorer, ExperimentScorers, load_active
from agentwharf.store.models import MonitorScore, ScorerEnvironment, ScoringQueue

log = logging.getLogger("agentwharf.quality.online")

POLL_SECONDS = 0.1
FLUSH_SECONDS = 0.1
REFRESH_SECONDS = 1.0
BATCH = 500
#: How often MLflow's own online-scoring checkpoint is moved past what was scored here (only
#: when MLflow's job runner runs, so its scheduler does not score the same traces again).
MLFLOW_CHECKPOINT_SECONDS = 10.0


@dataclass
class Pending:
    """A queued trace being scored: which of its scorers have not answered yet."""

    seq: int
    trace_id: str
    endpoint: str
    served_entity: str | None
    answered_ms: int
    outstanding: set[str] = field(default_factory=set)


@dataclass
class Settings:
    database_uri: str
    artifacts_dir: Path
    logs_dir: Path
    #: The platform's own runtime folder (``agentwharf`` alone), for runners in model environments.
    runtime_dir: Path
    #: served entity key (``endpoint/entity``) -> the python of its environment (``model``).
    served_environments: Path
    limits: Limits = field(default_factory=Limits)
    judge_threads: int = 16
    max_backlog_seconds: float = 3600.0
    mlflow_checkpoint: bool = False


class OnlineScoring:
    def __init__(self, settings: Settings, store=None):
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        self.settings = settings
        self.store = store or SqlAlchemyStore(settings.database_uri, str(settings.artifacts_dir))
        self.judges = ThreadPoolExecutor(settings.judge_threads, thread_name_prefix="judge")
        self.judges_outstanding = 0
        self._judges_lock = threading.Lock()
        self.active: dict[str, ExperimentScorers] = {}
        self.environments: dict[tuple[str, str], ScorerEnvironment] = {}
        self.lanes: dict[tuple[str, str, str], Lane] = {}
        self.pending: dict[str, Pending] = {}
        self.high_water = 0
        self.results: queue.Queue = queue.Queue()
        self._refreshed = float("-inf")
        self._fingerprint: tuple | None = None
        self._checkpointed = time.monotonic()
        self._scored_upto: dict[str, int] = {}
        self.scored = 0
        self.dropped = 0

    # -- what is active ----------------------------------------------------------------------

    def refresh(self, now: bool = False) -> None:
        """Reload the active scorers if they changed: at least every second, and ``now`` before
        scoring newly queued traces, so a trace stored after ``start()``/``update()``/``stop()``
        returned is scored with what they set (the check is a few small reads)."""
        if not now and time.monotonic() - self._refreshed < REFRESH_SECONDS:
            return
        self._refreshed = time.monotonic()
        with self.store.ManagedSessionMaker() as session:
            fingerprint = scorers_fingerprint(session)
            if fingerprint == self._fingerprint:
                return
            self.environments = {(row.experiment_id, row.scorer): row
                                 for row in session.scalars(select(ScorerEnvironment)).all()}
            session.expunge_all()
        self.active = load_active(self.store)
        self._fingerprint = fingerprint
        wanted = {(s.experiment_id, s.name) for group in self.active.values() for s in group.scorers.values() if s.custom}
        for key, lane in list(self.lanes.items()):
            serialized = self._serialized(key[0], key[1])
            if (key[0], key[1]) not in wanted or serialized != lane.serialized or not self._still_chosen(*key):
                lane.close()  # stopped, deleted, a new version or another environment: its runner goes
                del self.lanes[key]
        for experiment_id, name in wanted:
            python, pythonpath, problem = self._environment(experiment_id, name, None)
            if problem is None and python is not None:
                self._lane(experiment_id, name, python, pythonpath)

    def _serialized(self, experiment_id: str, name: str) -> str | None:
        group = self.active.get(experiment_id)
        scorer = group.scorers.get(name) if group else None
        return scorer.serialized if scorer else None

    def _served_environments(self) -> dict[str, str]:
        try:
            return orjson.loads(self.settings.served_environments.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}

    def _environment(self, experiment_id: str, scorer: str, pending: Pending | None) -> tuple[str | None, str | None, str | None]:
        """(python, PYTHONPATH, problem) for a custom scorer's runner. ``model`` environments
        depend on the trace (``pending``): None without one."""
        chosen = self.environments.get((experiment_id, scorer))
        if chosen is None or chosen.kind == "platform":
            return sys.executable, None, None
        if chosen.kind == "model":
            if pending is None:
                return None, None, None
            python = self._served_environments().get(f"{pending.endpoint}/{pending.served_entity}")
            if python is None:
                return None, None, (f"scorer {scorer!r} runs in the environment of the model version that answered, "
                                    f"and {pending.served_entity!r} has none known (not served any more?)")
            return python, str(self.settings.runtime_dir), None
        if chosen.state != "READY" or not chosen.python:
            return None, None, (f"the environment of scorer {scorer!r} ({chosen.model_uri}) is {chosen.state.lower()}"
                                + (f": {chosen.message}" if chosen.message else ""))
        return chosen.python, str(self.settings.runtime_dir), None

    def _still_chosen(self, experiment_id: str, name: str, python: str) -> bool:
        """Whether a lane's Python is still where the scorer runs (for ``model``: one a served
        version runs in)."""
        chosen = self.environments.get((experiment_id, name))
        if chosen is not None and chosen.kind == "model":
            return python in self._served_environments().values()
        expected, _, _ = self._environment(experiment_id, name, None)
        return python == expected

    def _lane(self, experiment_id: str, name: str, python: str, pythonpath: str | None) -> Lane:
        key = (experiment_id, name, python)
        lane = self.lanes.get(key)
        if lane is None:
            import agentwharf

            serialized = self._serialized(experiment_id, name)
            log_path = self.settings.logs_dir / "scorers" / f"{experiment_id}-{_safe(name)}.log"
            lane = self.lanes[key] = Lane(name, serialized, python, pythonpath, self.settings.limits, log_path, {},
                                          read_paths=[str(Path(agentwharf.__file__).resolve().parent)])
            lane.prestart()
        return lane

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        last_flush = time.monotonic()
        while not stop.is_set():
            try:
                self.refresh()
                taken = self.take()
            except Exception:
                log.exception("online scoring: reading the queue failed; retrying")
                taken = 0
                stop.wait(1.0)
            if time.monotonic() - last_flush >= FLUSH_SECONDS or not taken:
                self.flush()
                last_flush = time.monotonic()
            if not taken:
                stop.wait(POLL_SECONDS)
        self.close()

    def take(self) -> int:
        """Dispatch what the writer queued since the last poll. Returns how many rows."""
        with self.store.ManagedSessionMaker() as session:
            rows = session.execute(select(ScoringQueue.seq, ScoringQueue.trace_id, ScoringQueue.experiment_id,
                                          ScoringQueue.endpoint, ScoringQueue.served_entity, ScoringQueue.answered_ms,
                                          ScoringQueue.stored_ms)
                                   .where(ScoringQueue.seq > self.high_water).order_by(ScoringQueue.seq).limit(BATCH)).all()
            if not rows:
                return 0
            self.refresh(now=True)
            done = set(session.execute(select(MonitorScore.trace_id, MonitorScore.scorer)
                                       .where(MonitorScore.trace_id.in_([r.trace_id for r in rows]))).all())
        self.high_water = rows[-1].seq
        now_ms = int(time.time() * 1000)
        finished: list[int] = []
        work: dict[str, list[ActiveScorer]] = {}
        for row in rows:
            group = self.active.get(row.experiment_id)
            if group is None or row.trace_id in self.pending:
                finished.append(row.seq)  # its scorers were stopped meanwhile
                continue
            if now_ms - row.stored_ms > self.settings.max_backlog_seconds * 1000:
                self.dropped += 1
                finished.append(row.seq)
                continue
            chosen = [s for s in group.sample(row.trace_id) if (row.trace_id, s.name) not in done]
            if not chosen:
                finished.append(row.seq)
                continue
            self.pending[row.trace_id] = Pending(row.seq, row.trace_id, row.endpoint, row.served_entity, row.answered_ms)
            work[row.trace_id] = chosen
        sampled = list(work)
        work = self._apply_filters(work)
        for trace_id in sampled:
            if trace_id not in work:  # no scorer's filter matched it
                finished.append(self.pending.pop(trace_id).seq)
        if finished:
            self.results.put(([], finished))
        if work:
            self._dispatch(work)
        return len(rows)

    def _apply_filters(self, work: dict[str, list[ActiveScorer]]) -> dict[str, list[ActiveScorer]]:
        """Keep each scorer only on the traces its filter string matches (MLflow's search)."""
        from mlflow.genai.scorers.online.constants import EXCLUDE_EVAL_RUN_TRACES_FILTER

        by_filter: dict[tuple[str, str], set[str]] = {}
        for trace_id, scorers in work.items():
            for scorer in scorers:
                if scorer.filter_string:
                    by_filter.setdefault((scorer.experiment_id, scorer.filter_string), set()).add(trace_id)
        matching: dict[tuple[str, str], set[str]] = {}
        for (experiment_id, filter_string), trace_ids in by_filter.items():
            matching[(experiment_id, filter_string)] = self._matching(experiment_id, filter_string, sorted(trace_ids),
                                                                      EXCLUDE_EVAL_RUN_TRACES_FILTER)
        kept = {}
        for trace_id, scorers in work.items():
            chosen = [s for s in scorers if not s.filter_string or trace_id in matching[(s.experiment_id, s.filter_string)]]
            if chosen:
                kept[trace_id] = chosen
        return kept

    def _matching(self, experiment_id: str, filter_string: str, trace_ids: list[str], exclude: str) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(trace_ids), 100):
            chunk = trace_ids[start:start + 100]
            ids = ", ".join(f"'{t}'" for t in chunk)
            try:
                infos, _ = self.store.search_traces(
                    experiment_ids=[experiment_id], filter_string=f"{exclude} AND {filter_string} AND trace.request_id IN ({ids})",
                    max_results=len(chunk))
            except Exception as error:  # a filter MLflow cannot parse: nothing matches, said once per refresh
                log.warning("filter %r of experiment %s does not work: %s", filter_string, experiment_id, error)
                return set()
            found.update(info.trace_id for info in infos)
        return found

    def _dispatch(self, work: dict[str, list[ActiveScorer]]) -> None:
        traces = {t.info.trace_id: t for t in self.store.batch_get_traces(list(work))}
        for trace_id, scorers in work.items():
            pending = self.pending[trace_id]
            trace = traces.get(trace_id)
            if trace is None:  # deleted between the queue and now
                self.pending.pop(trace_id)
                self.results.put(([], [pending.seq]))
                continue
            pending.outstanding = {s.name for s in scorers}
            builtin = [s for s in scorers if not s.custom]
            if builtin:
                self._judge(trace, pending, builtin)
            custom = [s for s in scorers if s.custom]
            if custom:
                trace_json = trace.to_json()
                for scorer in custom:
                    self._custom(trace, trace_json, pending, scorer)

    def _judge(self, trace, pending: Pending, scorers: list[ActiveScorer]) -> None:
        with self._judges_lock:
            backlog = self.judges_outstanding
            if backlog < self.settings.limits.max_backlog:
                self.judges_outstanding += 1
        if backlog >= self.settings.limits.max_backlog:
            for scorer in scorers:
                self._done(trace, pending, scorer, [error_feedback(scorer.name, "SCORER_BACKLOG",
                                                                   f"{backlog} judge calls are waiting already; this trace "
                                                                   "was not scored")])
            return
        self.judges.submit(self._run_judges, trace, pending, scorers)

    def _run_judges(self, trace, pending: Pending, scorers: list[ActiveScorer]) -> None:
        from mlflow.genai.evaluation.harness import _compute_eval_scores

        try:
            result = _compute_eval_scores(eval_item=eval_item(trace), scorers=[s.scorer for s in scorers])
            by_name: dict[str, list] = {s.name: [] for s in scorers}
            for feedback in result.assessments:
                owner = feedback.name if feedback.name in by_name else _owner(feedback.name, by_name)
                by_name[owner].append(feedback)
        except Exception as error:  # MLflow's harness records a scorer's errors itself; this is anything else
            log.exception("judges failed on trace %s", trace.info.trace_id)
            by_name = {s.name: [error_feedback(s.name, "SCORER_ERROR", f"{type(error).__name__}: {error}")] for s in scorers}
        finally:
            with self._judges_lock:
                self.judges_outstanding -= 1
        for scorer in scorers:
            self._done(trace, pending, scorer, by_name[scorer.name])

    def _custom(self, trace, trace_json: str, pending: Pending, scorer: ActiveScorer) -> None:
        python, pythonpath, problem = self._environment(scorer.experiment_id, scorer.name, pending)
        if problem is not None:
            self._done(trace, pending, scorer, [error_feedback(scorer.name, "SCORER_ENVIRONMENT_NOT_READY", problem)])
            return
        lane = self._lane(scorer.experiment_id, scorer.name, python, pythonpath)
        lane.submit(Job(trace_json, lambda feedbacks: self._done(trace, pending, scorer, feedbacks)))

    def _done(self, trace, pending: Pending, scorer: ActiveScorer, feedbacks: list) -> None:
        """A scorer answered (any thread): queue its result for the next flush."""
        from mlflow.entities import Feedback

        feedbacks = [f if isinstance(f, Feedback) else Feedback.from_dictionary(f) for f in feedbacks]
        result = Result(trace, scorer.name, scorer.version, feedbacks, pending.endpoint, pending.served_entity,
                        pending.answered_ms)
        self.results.put(([result], [], pending, scorer.name))

    def flush(self) -> None:
        """Write every result that arrived, in one transaction."""
        batch: list[Result] = []
        finished: list[int] = []
        while True:
            try:
                item = self.results.get_nowait()
            except queue.Empty:
                break
            batch += item[0]
            finished += item[1]
            if len(item) > 2:
                pending, name = item[2], item[3]
                pending.outstanding.discard(name)
                if not pending.outstanding and self.pending.pop(pending.trace_id, None) is not None:
                    finished.append(pending.seq)
        if not batch and not finished:
            return
        try:
            results_module.write(self.store, batch, finished)
        except Exception:
            log.exception("writing %d results failed; they are scored again after a restart", len(batch))
            return
        self.scored += len(batch)
        for result in batch:
            experiment_id = result.trace.info.experiment_id
            self._scored_upto[experiment_id] = max(self._scored_upto.get(experiment_id, 0), result.trace.info.timestamp_ms)
        if self.settings.mlflow_checkpoint:
            self._move_mlflow_checkpoint()

    def _move_mlflow_checkpoint(self) -> None:
        """Tell MLflow's own scheduler (when its job runner runs) that these traces are scored:
        its checkpoint is the experiment tag it starts from."""
        if time.monotonic() - self._checkpointed < MLFLOW_CHECKPOINT_SECONDS:
            return
        self._checkpointed = time.monotonic()
        from mlflow.genai.scorers.online.trace_checkpointer import OnlineTraceCheckpointManager, OnlineTraceScoringCheckpoint

        for experiment_id, timestamp_ms in self._scored_upto.items():
            try:
                OnlineTraceCheckpointManager(self.store, experiment_id).persist_checkpoint(
                    OnlineTraceScoringCheckpoint(timestamp_ms=timestamp_ms))
            except Exception:
                log.debug("could not move MLflow's checkpoint of experiment %s", experiment_id, exc_info=True)
        self._scored_upto.clear()

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.close()
        self.judges.shutdown(wait=False, cancel_futures=True)
        self.flush()


def scorers_fingerprint(session) -> tuple:
    """Changes whenever a scorer is started, updated, stopped, registered again, deleted, or
    its environment chosen: MLflow replaces a scorer's online configuration (a new id) on every
    change, and every registration is a new version."""
    from mlflow.store.tracking.dbmodels.models import SqlOnlineScoringConfig, SqlScorerVersion
    from sqlalchemy import func

    configs = sorted(session.execute(select(SqlOnlineScoringConfig.online_scoring_config_id)).scalars())
    versions = session.execute(select(func.count(), func.max(SqlScorerVersion.creation_time))).one()
    environments = sorted(session.execute(select(ScorerEnvironment.experiment_id, ScorerEnvironment.scorer,
                                                 ScorerEnvironment.state, ScorerEnvironment.updated_at)).all())
    return tuple(configs), tuple(versions), tuple(environments)


def _owner(feedback_name: str, names: dict) -> str:
    """The scorer a feedback of another name came from (a scorer may name its feedbacks
    ``<scorer>/<part>``); the first scorer otherwise."""
    for name in names:
        if feedback_name.startswith(f"{name}/"):
            return name
    return next(iter(names))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:100]
