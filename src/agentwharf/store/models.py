"""SQLAlchemy tables of agentwharf's own state.

They share the database with MLflow's tables, so every name starts with ``aw_`` and the Alembic
version table is ``aw_alembic_version``.
"""

from __future__ import annotations

import time

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Set before the first revision so constraint names are stable across SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def now_ms() -> int:
    return int(time.time() * 1000)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Endpoint(Base):
    """A serving endpoint: its served entities and how traffic is split among them.

    ``routes`` is the live traffic split. While a config update waits for new workers to load,
    the split it will switch to is ``pending_routes`` and the new entities are marked pending.
    """

    __tablename__ = "aw_endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    creator: Mapped[str | None] = mapped_column(String(256))
    description: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[dict] = mapped_column(JSON, default=dict)
    experiment_id: Mapped[str | None] = mapped_column(String(64))
    routes: Mapped[list] = mapped_column(JSON, default=list)
    pending_routes: Mapped[list | None] = mapped_column(JSON)
    config_version: Mapped[int] = mapped_column(Integer, default=0)
    #: NOT_UPDATING, IN_PROGRESS or UPDATE_FAILED (Databricks' config_update values).
    update_state: Mapped[str] = mapped_column(String(32), default="NOT_UPDATING")
    update_message: Mapped[str | None] = mapped_column(Text)
    #: An LLM endpoint's task (``llm/v1/chat``, ``llm/v1/completions``, ``llm/v1/embeddings``);
    #: NULL for an agent endpoint.
    task: Mapped[str | None] = mapped_column(String(32))
    #: The endpoint's AI gateway settings in Databricks' shape (rate limits, usage tracking,
    #: inference table, guardrails, fallbacks); NULL when never set.
    ai_gateway: Mapped[dict | None] = mapped_column(JSON)
    #: An LLM endpoint's endpoint in MLflow's AI Gateway (``e-...``), which serves its calls.
    gateway_endpoint_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_ms, onupdate=now_ms)

    entities: Mapped[list[ServedEntity]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan", order_by="ServedEntity.id", lazy="selectin"
    )


class ServedEntity(Base):
    """One registered model version served by an endpoint, or one external model (an LLM
    endpoint's provider and model; ``entity_version`` is then empty)."""

    __tablename__ = "aw_served_entities"
    __table_args__ = (UniqueConstraint("endpoint_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("aw_endpoints.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256))
    entity_name: Mapped[str] = mapped_column(String(512))
    entity_version: Mapped[str] = mapped_column(String(32))
    environment_vars: Mapped[dict] = mapped_column(JSON, default=dict)
    workload_size: Mapped[str] = mapped_column(String(32), default="Small")
    scale_to_zero: Mapped[bool] = mapped_column(Boolean, default=False)
    #: ``uv``, ``local``, or NULL for the platform's default.
    env_manager: Mapped[str | None] = mapped_column(String(16))
    pending: Mapped[bool] = mapped_column(Boolean, default=False)
    #: An external model in Databricks' shape (name, provider, task, the provider's config
    #: with the key only as a reference) and the MLflow AI Gateway objects behind it. Never
    #: holds a key: those live only in MLflow's encrypted secret store.
    external_model: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)

    endpoint: Mapped[Endpoint] = relationship(back_populates="entities")


class InferenceLog(Base):
    """The inference table: one row per served request, written by the spool writer."""

    __tablename__ = "aw_inference_log"
    __table_args__ = (Index("ix_aw_inference_log_endpoint_ts", "endpoint", "timestamp_ms"),)

    #: The platform's id of the request (always its own, so always unique).
    request_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: The caller's ``x-request-id``, as sent (callers may reuse one).
    client_request_id: Mapped[str | None] = mapped_column(String(128), index=True)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    endpoint: Mapped[str] = mapped_column(String(63))
    served_entity: Mapped[str | None] = mapped_column(String(256))
    model_name: Mapped[str | None] = mapped_column(String(512))
    model_version: Mapped[str | None] = mapped_column(String(32))
    status_code: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    caller: Mapped[str | None] = mapped_column(String(256))
    route: Mapped[str | None] = mapped_column(String(32))
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    request: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    request_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    response_truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    #: Token usage of an LLM endpoint's call, as its provider reported it or, where it
    #: reported none, estimated (``usage_estimated``).
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    total_tokens: Mapped[int | None] = mapped_column(Integer)
    usage_estimated: Mapped[bool | None] = mapped_column(Boolean)
    #: Set on a shadow copy's row (a rollout's candidate answering a copy of a live request,
    #: its answer never returned): the trace id of the live request it copied.
    shadow_of: Mapped[str | None] = mapped_column(String(64))


class SpoolCheckpoint(Base):
    """How far the writer has drained the spool; updated in the same transaction as the rows."""

    __tablename__ = "aw_spool_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    segment: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_ms, onupdate=now_ms)


class Principal(Base):
    """A user, a service principal or a group: SCIM's three resources, in one table because
    Databricks gives them one id space and one name space (a group member is named by id
    alone, and a grant by name alone). The name is what grants, traces and MLflow refer to."""

    __tablename__ = "aw_principals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    #: ``user``, ``service_principal`` or ``group``.
    kind: Mapped[str] = mapped_column(String(32))
    display_name: Mapped[str | None] = mapped_column(String(256))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: SCIM ``externalId`` (an identity provider's id), kept for scripts that sync from one.
    external_id: Mapped[str | None] = mapped_column(String(256))
    #: SCIM attributes agentwharf keeps and returns but does not act on (``emails``, ``name``,
    #: ``entitlements``, ``roles``), as the client sent them.
    attributes: Mapped[dict | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class GroupMember(Base):
    """A direct member (user, service principal or group) of a group. Who is an admin is
    who belongs to the built-in group ``admins``, directly or through another group."""

    __tablename__ = "aw_group_members"

    group_id: Mapped[int] = mapped_column(ForeignKey("aw_principals.id", ondelete="CASCADE"), primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("aw_principals.id", ondelete="CASCADE"), primary_key=True, index=True)


class AccessToken(Base):
    """A personal access token, kept only as its SHA-256 (see ``auth.tokens`` for why)."""

    __tablename__ = "aw_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("aw_principals.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    comment: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    #: Milliseconds since the epoch; NULL means no expiry.
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class EndpointGrant(Base):
    """A principal's permission level on a serving endpoint (by name, which users see)."""

    __tablename__ = "aw_endpoint_grants"

    endpoint_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("aw_principals.id", ondelete="CASCADE"), primary_key=True)
    level: Mapped[str] = mapped_column(String(32))


class ModelPrefixGrant(Base):
    """An MLflow registered-model permission on every model under ``catalog.schema``.

    MLflow grants per model only; agentwharf keeps prefix grants and copies them onto each
    matching model in MLflow's permission store, so MLflow still makes every decision."""

    __tablename__ = "aw_model_prefix_grants"

    prefix: Mapped[str] = mapped_column(String(512), primary_key=True)
    principal_id: Mapped[int] = mapped_column(ForeignKey("aw_principals.id", ondelete="CASCADE"), primary_key=True)
    permission: Mapped[str] = mapped_column(String(32))


class ReviewInstructions(Base):
    """What a registered model's reviewers read first in the review app (Markdown), as
    ``agents.set_review_instructions`` sets it."""

    __tablename__ = "aw_review_instructions"

    model_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    instructions: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_ms, onupdate=now_ms)


class RolloutRecord(Base):
    """A quality-gated rollout of a candidate version on an endpoint: what was asked (``spec``,
    a checked ``Rollout``), where it stands and every decision with its reason. The controller
    keeps nothing else, so a restarted platform resumes from here."""

    __tablename__ = "aw_rollouts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint_name: Mapped[str] = mapped_column(String(63), index=True)
    #: The served entities compared: the new version and the one that had the traffic.
    candidate: Mapped[str] = mapped_column(String(256))
    current: Mapped[str] = mapped_column(String(256))
    #: RUNNING, PROMOTED, ROLLED_BACK or ABORTED.
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    step: Mapped[int] = mapped_column(Integer, default=0)
    step_started_ms: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    decisions: Mapped[list] = mapped_column(JSON, default=list)
    #: The last evaluation's figures and gate verdicts (what ``rollout status`` shows).
    last_figures: Mapped[dict | None] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_ms, onupdate=now_ms)


# -- the quality loop (agentwharf.quality) ------------------------------------------------------


class ScoringQueue(Base):
    """Traces just stored, waiting for online scoring: the spool writer adds a row for each trace
    it stores in an experiment with active scorers, in the same transaction as the trace, and the
    scoring process deletes it once every sampled scorer's assessment is written. ``seq`` orders
    the queue (autoincrement on SQLite and PostgreSQL alike)."""

    __tablename__ = "aw_scoring_queue"
    # AUTOINCREMENT on SQLite: a ``seq`` is never reused, even once the queue has emptied.
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(64), unique=True)
    experiment_id: Mapped[str] = mapped_column(String(32))
    endpoint: Mapped[str] = mapped_column(String(63))
    served_entity: Mapped[str | None] = mapped_column(String(256))
    #: When the answer left the gateway (the request's record time, epoch ms).
    answered_ms: Mapped[int] = mapped_column(BigInteger)
    #: When the writer stored the trace.
    stored_ms: Mapped[int] = mapped_column(BigInteger)


class MonitorScore(Base):
    """One online scorer's result on one live trace, beside the MLflow assessment it wrote:
    what trends, alerts and Prometheus read (a number per result, per served version), without
    parsing assessments. ``outcome`` is ``pass``/``fail`` (a yes/no or true/false value, 1.0 or
    0.0 in ``value``), ``value`` (a number), ``other`` (text) or ``error``."""

    __tablename__ = "aw_monitor_scores"
    __table_args__ = (UniqueConstraint("trace_id", "scorer"), Index("ix_aw_monitor_scores_endpoint_answered", "endpoint", "answered_ms"),
                      {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    scorer: Mapped[str] = mapped_column(String(256))
    endpoint: Mapped[str] = mapped_column(String(63))
    served_entity: Mapped[str | None] = mapped_column(String(256))
    answered_ms: Mapped[int] = mapped_column(BigInteger)
    #: When the assessment was committed (readable through MLflow from then on).
    scored_ms: Mapped[int] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    error_code: Mapped[str | None] = mapped_column(String(64))


class ScorerEnvironment(Base):
    """Where a registered custom scorer's code runs: the platform's own Python (the default,
    still sandboxed), the environment of the model version whose trace it scores (``model``),
    or the environment of a registered model version named for it (``registered``)."""

    __tablename__ = "aw_scorer_environments"

    experiment_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    scorer: Mapped[str] = mapped_column(String(256), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    model_uri: Mapped[str | None] = mapped_column(String(600))
    #: The environment's interpreter once built (``registered``).
    python: Mapped[str | None] = mapped_column(Text)
    #: READY, BUILDING or FAILED (the builder's message in ``message``).
    state: Mapped[str] = mapped_column(String(16), default="READY")
    message: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(256))
    updated_at: Mapped[int] = mapped_column(BigInteger, default=now_ms, onupdate=now_ms)


class AlertRule(Base):
    """A threshold on one monitoring metric of an endpoint (or one served version), evaluated
    over a sliding window; crossing it and clearing it each fire the webhook."""

    __tablename__ = "aw_alert_rules"
    __table_args__ = (UniqueConstraint("endpoint", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(128))
    served_entity: Mapped[str | None] = mapped_column(String(256))
    metric: Mapped[str] = mapped_column(String(300))
    operator: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    window_seconds: Mapped[int] = mapped_column(Integer)
    min_samples: Mapped[int] = mapped_column(Integer)
    webhook_url: Mapped[str] = mapped_column(Text)
    #: Signs every delivery (HMAC-SHA256); shown once, when the rule is created.
    secret: Mapped[str] = mapped_column(String(128))
    #: OK, FIRING or INSUFFICIENT_DATA (fewer than ``min_samples`` in the window).
    state: Mapped[str] = mapped_column(String(24), default="INSUFFICIENT_DATA")
    last_value: Mapped[float | None] = mapped_column(Float)
    last_samples: Mapped[int | None] = mapped_column(Integer)
    last_evaluated_ms: Mapped[int | None] = mapped_column(BigInteger)
    changed_ms: Mapped[int | None] = mapped_column(BigInteger)
    created_by: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)


class AlertEvent(Base):
    """One firing or clearing of a rule and its webhook delivery."""

    __tablename__ = "aw_alert_events"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("aw_alert_rules.id", ondelete="CASCADE"), index=True)
    #: ``firing`` or ``cleared``.
    state: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    delivered_ms: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: When the next delivery attempt is due (back-off after a failed one).
    next_attempt_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class ReviewRule(Base):
    """Sends an endpoint's traces that match a trace filter (negative user feedback, a failing
    scorer, ...) to a labeling session's review queue as they appear."""

    __tablename__ = "aw_review_rules"
    __table_args__ = (UniqueConstraint("endpoint", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(63), index=True)
    name: Mapped[str] = mapped_column(String(128))
    filter_string: Mapped[str] = mapped_column(Text)
    #: The labeling session (MLflow review queue) the traces go to, and its name.
    queue_id: Mapped[str] = mapped_column(String(64))
    session_name: Mapped[str] = mapped_column(String(256))
    #: The rule acts as its creator in MLflow (MLflow's permissions apply).
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    traces_added: Mapped[int] = mapped_column(Integer, default=0)
    last_run_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(Text)


class ReviewRuleItem(Base):
    """A trace a rule has sent already (each goes once)."""

    __tablename__ = "aw_review_rule_items"

    rule_id: Mapped[str] = mapped_column(ForeignKey("aw_review_rules.id", ondelete="CASCADE"), primary_key=True)
    trace_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class ServingState(Base):
    """What the control process publishes for gateway processes (``agentwharf gateway``): one
    row per endpoint's routes (``route``), per served version's workers (``version``) and one
    for the identities (``identities``). ``generation`` grows with every change, so a gateway
    reads only what changed since it last looked; a removed item keeps its row with no payload."""

    __tablename__ = "aw_serving_state"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    payload: Mapped[str | None] = mapped_column(Text, nullable=True)
    generation: Mapped[int] = mapped_column(BigInteger, index=True)


class ServingDemand(Base):
    """What gateway processes tell the control process about a served version: when it last
    served a request (so an idle timeout counts every gateway's traffic) and whether a request
    waits for it to start (a cold start of a version scaled to zero)."""

    __tablename__ = "aw_serving_demand"

    #: ``gateway-<N>``: each gateway writes rows of its own (no two ever race on one row).
    process: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    used_at: Mapped[float] = mapped_column(Float)
    wake_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RateUsage(Base):
    """What one serving process (the platform, or gateway process N) counted in one rate-limit
    window over the last minute, so every process counts the others' calls too."""

    __tablename__ = "aw_rate_usage"

    process: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[str] = mapped_column(String(1024), primary_key=True)
    calls: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[float] = mapped_column(Float)
