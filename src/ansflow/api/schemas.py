"""Public request and response shapes (PRODUCT.md section 5), independent of the ORM."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda d: d.isoformat(timespec="microseconds"), return_type=str,
                    when_used="json"),
    # without this the serializer's ``str`` hides the date-time format from clients
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorEnvelope(BaseModel):
    error: ErrorBody


class PipelinePublic(BaseModel):
    id: int
    name: str
    description: str | None
    version: int
    definition: str
    definition_format: str
    created_at: Timestamp
    updated_at: Timestamp


class MatrixInstancePublic(BaseModel):
    """One instance of a matrix step: its name and its ``matrix.*`` values."""

    name: str
    step: str
    """The matrix step as written in the definition."""
    values: dict[str, str | bool | int | float]


class DagPublic(BaseModel):
    """The resolved graph: levels of steps and the estimated critical path. Matrix steps
    are expanded: ``matrices`` lists the instances of each."""

    valid: bool
    levels: list[list[str]]
    matrices: dict[str, list[MatrixInstancePublic]] = {}
    critical_path: list[str]
    estimated_duration_seconds: float | None = None
    """None while the estimate is by step count (``estimate_basis`` ``step_count``)."""
    estimate_basis: str


TriggerType = Literal["api", "webhook", "schedule", "cli", "retry"]


class ExecutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str | None = Field(None, max_length=255)
    commit: str | None = Field(None, max_length=64)
    variables: dict[str, Any] = {}


class TriggerPublic(BaseModel):
    type: str
    ref: str | None = None
    commit: str | None = None
    event: str | None = None
    actor: str | None = None
    variables: dict[str, Any] = {}


class AttemptPublic(BaseModel):
    number: int
    status: str
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    exit_code: int | None = None
    error: str | None = None


class TimingPublic(BaseModel):
    waiting_for_dependencies: float
    waiting_for_slot: float
    running: float
    backoff: float


class ApprovalPublic(BaseModel):
    """What an approval step asks, and who decided it, when and why."""

    message: str
    approvers: list[str]
    """Token names that may decide; empty: any token with the trigger scope."""
    requested_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    decision: Literal["approved", "rejected", "timed_out", "cancelled"] | None = None
    decided_by: str | None = None
    """The name of the token (``cli:<user>`` from ``ansflow approve``)."""
    decided_at: Timestamp | None = None
    comment: str | None = None


class DecisionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: str | None = Field(None, max_length=4096)


class StepPublic(BaseModel):
    name: str
    type: str
    status: str
    depends_on: list[str]
    ready_at: Timestamp | None
    started_at: Timestamp | None
    completed_at: Timestamp | None
    exit_code: int | None
    attempts: list[AttemptPublic]
    timing: TimingPublic
    slack_seconds: float | None
    waiting_for: list[str]
    outputs: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    error_code: str | None = None
    matrix: MatrixInstancePublic | None = None
    """Set on an instance of a matrix step."""
    approval: ApprovalPublic | None = None
    """Set on an approval step once it asked for a decision."""


class CriticalPathPublic(BaseModel):
    steps: list[str]
    duration_seconds: float


class ExecutionPublic(BaseModel):
    id: int
    pipeline_id: int
    pipeline_name: str
    pipeline_version: int
    status: Literal["queued", "running", "success", "failed", "cancelled", "timed_out", "error"]
    trigger: TriggerPublic
    queued_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    duration_seconds: float | None
    critical_path: CriticalPathPublic | None
    error: str | None = None
    cancel_requested: bool = False
    steps: list[StepPublic]


class ExecutionSummary(BaseModel):
    """An execution in lists: everything but the steps."""

    id: int
    pipeline_id: int
    pipeline_version: int
    status: str
    trigger: TriggerPublic
    queued_at: Timestamp
    started_at: Timestamp | None
    completed_at: Timestamp | None
    duration_seconds: float | None


class HealthPublic(BaseModel):
    status: Literal["ok"]


class ReadyPublic(BaseModel):
    """Every dependency checked, by name (``database``, ``queue``), answered ``ok``."""

    status: Literal["ready"]
    checks: dict[str, str]


class LogPublic(BaseModel):
    content: str
    offset: int
    next_offset: int
    complete: bool
    truncated_bytes: int


class SecretCreate(BaseModel):
    """A secret value; it is encrypted at rest and never returned."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    value: str = Field(min_length=1, max_length=65536)
    pipeline_id: int | None = Field(None, ge=1, description="Only this pipeline sees it")


class SecretPublic(BaseModel):
    id: int
    name: str
    scope: str
    pipeline_id: int | None
    created_at: Timestamp
    updated_at: Timestamp


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Literal["read", "trigger", "admin"]
    name: str = Field("api", min_length=1, max_length=128)
    expires_in_seconds: int | None = Field(None, ge=60, le=10 * 365 * 86400)


class TokenPublic(BaseModel):
    id: int
    name: str
    scope: str
    prefix: str
    created_at: Timestamp
    expires_at: Timestamp | None
    last_used_at: Timestamp | None
    revoked_at: Timestamp | None


class TokenCreated(TokenPublic):
    token: str = Field(description="Shown only in this response; store it now")


class DeploymentPublic(BaseModel):
    """A successful deploy step: what went where, from which execution."""

    environment: str
    version: str | None
    commit: str | None
    target: str | None
    url: str | None
    execution_id: int
    pipeline_id: int
    step: str
    deployed_at: Timestamp | None
    rolled_back_from: str | None = None


class WebhookResult(BaseModel):
    """What a delivery did: ``started`` (or ``duplicate`` of an earlier delivery, with its
    execution), ``filtered`` or ``ignored`` (with the reason), ``pong`` for a ping."""

    status: Literal["started", "duplicate", "filtered", "ignored", "pong"]
    execution_id: int | None = None
    reason: str | None = None


class AuditEventPublic(BaseModel):
    id: int
    created_at: Timestamp
    actor: str = Field(description="A token's name, a webhook's sender, the user running "
                                   "the CLI, or `schedule`")
    actor_type: Literal["token", "webhook", "schedule", "cli"]
    token_id: int | None = Field(description="The token used, when the actor is one")
    action: str = Field(description="`<resource>.<verb>`, e.g. `execution.start`")
    resource_type: str
    resource_id: str | None
    details: dict[str, Any]
