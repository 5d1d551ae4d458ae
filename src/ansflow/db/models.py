"""Tables. Datetimes are UTC with microseconds on every backend (MySQL ``DATETIME(6)``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    true,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column
from sqlalchemy.types import TypeDecorator

from ansflow.status import ExecutionStatus, StepStatus, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

UTF8MB4: dict[str, Any] = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
"""Every table's MySQL options: utf8mb4 stores all of Unicode (a latin1 or utf8mb3 default
loses emoji and CJK text), and binary comparison treats names, secret names and delivery
ids byte for byte, as SQLite does (a ``_ci`` collation would make ``build`` and ``Build``
collide on unique keys)."""

_DT = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Stores UTC, refuses naive input, gives back aware datetimes."""

    impl = _DT
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON,
    }


class Pipeline(Base):
    __tablename__ = "pipeline"
    __table_args__ = UTF8MB4

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    definition: Mapped[str] = mapped_column(LongText)
    definition_format: Mapped[str] = mapped_column(String(8), default="yaml")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AtomicStep(Base):
    """One step of one version of a pipeline; executions point at the version they ran."""

    __tablename__ = "atomic_step"
    __table_args__ = (UniqueConstraint("pipeline_id", "pipeline_version", "name"), UTF8MB4)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipeline.id", ondelete="CASCADE"))
    pipeline_version: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    step_type: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    dependency_ids: Mapped[list[Any]] = mapped_column(default=list)
    order: Mapped[int] = mapped_column(Integer, default=0)
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    retry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    condition: Mapped[str | None] = mapped_column(Text)
    continue_on_error: Mapped[bool] = mapped_column(Boolean, default=False)
    env: Mapped[dict[str, Any]] = mapped_column(default=dict)
    network: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    artifacts: Mapped[list[Any] | None] = mapped_column(JSON)
    """Globs of files kept as artifacts after the step succeeds (None: none)."""
    cache: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """``{key, paths, restore_keys}`` as written (expressions unrendered)."""
    matrix: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """For an instance of a matrix step: ``{of, values, max_parallel, fail_fast}``."""
    concurrency: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The step's ``concurrency`` (group template and cancel_in_progress)."""
    runs_on: Mapped[list[Any] | None] = mapped_column(JSON)
    """The labels a worker needs to run the step (the step's or the pipeline's
    ``runs_on``; None: any worker)."""


class PipelineExecution(Base):
    __tablename__ = "pipeline_execution"
    __table_args__ = (
        Index(None, "status", "lease_expires_at"),
        Index(None, "pipeline_id", "id"),
        Index(None, "wake_at"),
        UTF8MB4,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipeline.id", ondelete="CASCADE"))
    pipeline_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ExecutionStatus.QUEUED)
    trigger_type: Mapped[str] = mapped_column(String(16))
    trigger: Mapped[dict[str, Any]] = mapped_column(default=dict)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """The pipeline-level settings of the version this execution runs (env, timeout...)."""
    queued_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    """When the holder last renewed its lease: where a crashed worker's attempts end."""
    cancel_requested_at: Mapped[datetime | None]
    parked_at: Mapped[datetime | None]
    """Set while no worker holds the execution because it waits for something outside
    (an approval, a concurrency group): it holds no lease and no worker slot."""
    wake_at: Mapped[datetime | None]
    """When a parked execution needs a worker again (a decision came, a timeout is due);
    the sweeper dispatches parked executions whose time has come."""
    retry_of_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="SET NULL"))
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Committed transactions that changed what the events stream shows: the id of the
    latest event (each such transaction of the execution takes the next number)."""
    status_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """``event_seq`` of the transaction that last changed ``status``."""


class StepExecution(Base):
    __tablename__ = "step_execution"
    __table_args__ = (UniqueConstraint("pipeline_execution_id", "atomic_step_id"),
                      Index(None, "worker_id", "status"), Index(None, "dispatch"), UTF8MB4)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_execution_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="CASCADE"))
    atomic_step_id: Mapped[int] = mapped_column(ForeignKey("atomic_step.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default=StepStatus.PENDING)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[list[Any]] = mapped_column(default=list)
    ready_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    backoff_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    exit_code: Mapped[int | None] = mapped_column(Integer)
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    error_code: Mapped[str | None] = mapped_column(String(64))
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    """Bytes the step has written to its log in total, kept or not (the next offset)."""
    status_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """The execution's ``event_seq`` of the transaction that last changed ``status``."""
    manifest: Mapped[str | None] = mapped_column(String(64))
    """sha256 of the manifest of what the step changed in the workspace (the store)."""
    original: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """For a step a retry reused: the execution that ran it, and that run's timestamps
    and attempts (this execution's own stay empty)."""
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The decision on a waiting (approval) step: ``{verdict, by, at, comment}``. Filled
    once, by a person or by the engine (a timeout, a cancel); the engine then ends the
    step accordingly."""
    worker_id: Mapped[str | None] = mapped_column(String(128))
    """The worker that runs (or last ran) the step."""
    lease_expires_at: Mapped[datetime | None]
    """A step handed to another worker than the execution's: that worker's lease on it
    (renewed by its heartbeat; None for a step its execution's holder runs)."""
    dispatch: Mapped[str | None] = mapped_column(String(32))
    """The token of the hand-over waiting in the step queue (None once a worker took it):
    only the worker that pops this token may claim the step."""
    stop_requested: Mapped[str | None] = mapped_column(String(16))
    """Set by the execution's holder to stop a step another worker runs: the status the
    step ends with (``cancelled``, ``timed_out``)."""


class Artifact(Base):
    """A file a step kept: its content is the store's blob named by ``sha256``."""

    __tablename__ = "artifact"
    __table_args__ = (Index(None, "pipeline_execution_id", "step"), Index(None, "created_at"),
                      UTF8MB4)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    pipeline_execution_id: Mapped[int] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepLog(Base):
    """A chunk of a step's log. ``offset`` is the byte position in the full output, so
    a reader tails by offset; chunks dropped past the size limit leave a gap."""

    __tablename__ = "step_log"
    __table_args__ = (Index(None, "step_execution_id", "offset"),
                      Index(None, "step_execution_id", "seq"), UTF8MB4)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    step_execution_id: Mapped[int] = mapped_column(
        ForeignKey("step_execution.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(LongText)
    seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """The execution's ``event_seq`` of the transaction that stored the chunk."""


class ApiToken(Base):
    """A bearer token. Only the SHA-256 of the token is stored; ``prefix`` identifies it
    in lists without revealing it."""

    __tablename__ = "api_token"
    __table_args__ = UTF8MB4

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Secret(Base):
    """A named secret, encrypted at rest; ``scope`` is ``global`` or ``pipeline:<id>``."""

    __tablename__ = "secret"
    __table_args__ = (UniqueConstraint("scope", "name"), UTF8MB4)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(String(32), default="global")
    pipeline_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline.id", ondelete="CASCADE"))
    ciphertext: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One accepted webhook delivery; the unique key makes redeliveries idempotent."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (UniqueConstraint("provider", "pipeline_id", "delivery_id"), UTF8MB4)

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipeline.id", ondelete="CASCADE"))
    delivery_id: Mapped[str] = mapped_column(String(128))
    event: Mapped[str | None] = mapped_column(String(64))
    execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookBody(Base):
    """The SHA-256 of a webhook body a pipeline accepted, kept ``REPLAY_WINDOW`` (24 h): the
    same signed body delivered again under another delivery id (a replay) starts nothing.
    Rows older than the window are deleted by the periodic housekeeping job."""

    __tablename__ = "webhook_body"
    __table_args__ = (UniqueConstraint("pipeline_id", "body_sha256"), Index(None, "created_at"),
                      UTF8MB4)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipeline.id", ondelete="CASCADE"))
    body_sha256: Mapped[str] = mapped_column(String(64))
    delivery_id: Mapped[str] = mapped_column(String(128))
    """The delivery that first brought the body."""
    execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ScheduleRun(Base):
    """One started slot of a pipeline's schedule; unique, so each slot runs once however
    many schedulers race for it."""

    __tablename__ = "schedule_run"
    __table_args__ = (UniqueConstraint("pipeline_id", "schedule", "slot_at"), UTF8MB4)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipeline.id", ondelete="CASCADE"))
    schedule: Mapped[str] = mapped_column(String(160))
    """The cron expression and timezone, e.g. ``0 2 * * * (UTC)``."""
    slot_at: Mapped[datetime]
    execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Who did what: one row per start, cancel, retry, approval and change to pipelines,
    secrets and tokens, written in the transaction of the change. Rows are never updated
    (``db/audit.py``); only the retention cleanup deletes them."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index(None, "created_at"),
        Index(None, "actor"),
        Index(None, "action"),
        Index(None, "resource_type", "resource_id"),
        UTF8MB4,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    """A token's name, a webhook's sender, the user running the CLI, ``schedule``."""
    actor_type: Mapped[str] = mapped_column(String(16))
    """``token``, ``webhook``, ``schedule`` or ``cli``."""
    token_id: Mapped[int | None] = mapped_column(Integer)
    """The token used, when the actor is one (token names need not be unique); no foreign
    key, so that the record outlives the token."""
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


@event.listens_for(AuditEvent, "before_update")
def _append_only(_mapper: Mapper[AuditEvent], _connection: Any, target: AuditEvent) -> None:
    raise RuntimeError(f"audit event {target.id} cannot be changed: the audit log is "
                       "append-only")


class Worker(Base):
    """A running ``ansflow worker``: its labels and step capacity, renewed every
    heartbeat. Live while its heartbeat is younger than the lease; removed when it stops
    (a crashed worker's row stays, not live, until housekeeping drops it)."""

    __tablename__ = "worker"
    __table_args__ = (Index(None, "heartbeat_at"), UTF8MB4)

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    labels: Mapped[list[Any]] = mapped_column(default=list)
    concurrency: Mapped[int] = mapped_column(Integer)
    running: Mapped[int] = mapped_column(Integer, default=0)
    """Steps running on it as of its last heartbeat."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class TokenRevision(Base):
    """One row counting token revocations; API processes compare it with the count they
    last saw to drop cached tokens (``api/auth.py``)."""

    __tablename__ = "token_revision"
    __table_args__ = UTF8MB4

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class ConcurrencyGroup(Base):
    """One concurrency group (PRODUCT.md section 11): who runs in it and who waits.

    The row is the arbiter across every API process and worker: a transaction that
    enters or leaves a group locks it first, so at most one execution (or step) holds a
    group and at most one waits, the newest. Rows stay once created (one per name).
    """

    __tablename__ = "concurrency_group"
    # group names compare exactly: a case-insensitive collation would merge two groups
    __table_args__ = UTF8MB4

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    holder_execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="SET NULL"))
    holder_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("step_execution.id", ondelete="SET NULL"))
    """Set when a step (not a whole execution) holds the group."""
    waiter_execution_id: Mapped[int | None] = mapped_column(
        ForeignKey("pipeline_execution.id", ondelete="SET NULL"))
    waiter_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("step_execution.id", ondelete="SET NULL"))
    preempted: Mapped[str | None] = mapped_column(Text)
    """Why the holding step must stop (a newer one has ``cancel_in_progress``)."""
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
