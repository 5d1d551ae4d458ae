"""Public request and response shapes (PRODUCT.md section 5), independent of the ORM."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from ansflow.triggers.inputs import CommitId, GitRef, Variables

Timestamp = Annotated[
    datetime,
    PlainSerializer(lambda d: d.isoformat(timespec="microseconds"), return_type=str,
                    when_used="json"),
    # without this the serializer's ``str`` hides the date-time format from clients
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
T = TypeVar("T")
MAX_INT64 = 2**63 - 1
"""The largest id or offset a database column holds: a bigger number in a request is a
422, never an overflow in the driver."""


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


class DagStep(BaseModel):
    name: str
    type: str
    depends_on: list[str]
    estimated_seconds: float | None = None
    """The median duration of the step's recent successful runs (None: no run yet)."""


class DagPublic(BaseModel):
    """The resolved graph: levels of steps and the estimated critical path. Matrix steps
    are expanded: ``matrices`` lists the instances of each."""

    valid: bool
    levels: list[list[str]]
    matrices: dict[str, list[MatrixInstancePublic]] = {}
    critical_path: list[str]
    estimated_duration_seconds: float | None = None
    """None while the estimate is by step count (``estimate_basis`` ``step_count``)."""
    estimate_basis: Literal["step_count", "past_durations"]
    steps: list[DagStep] = []


class TriggerType(StrEnum):
    API = "api"
    WEBHOOK = "webhook"
    SCHEDULE = "schedule"
    CLI = "cli"
    RETRY = "retry"


class WhoAmI(BaseModel):
    """The token a request was made with: what the UI may offer."""

    name: str
    scope: Literal["read", "trigger", "admin"]
    expires_at: Timestamp | None


class ExecutionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: GitRef | None = None
    """A branch, tag, full ref name or commit id, checked like git's ref names."""
    commit: CommitId | None = None
    variables: Variables = {}


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
    worker: str | None = None
    """The worker that ran the attempt."""


class TimingPublic(BaseModel):
    """Where the step's time went; the buckets add up to its end (or now) minus the
    execution's start. ``interrupted``: no worker held the execution (a crashed worker's
    last heartbeat to the resume)."""

    waiting_for_dependencies: float
    waiting_for_slot: float
    running: float
    backoff: float
    interrupted: float = 0.0


class OriginalRunPublic(BaseModel):
    """The run a reused step's result comes from, in an earlier execution."""

    execution_id: int
    ready_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    attempts: list[AttemptPublic] = []


class ApprovalDecision(StrEnum):
    """``timed_out``: nobody decided in time; ``cancelled``: the execution stopped first."""

    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


class ApprovalPublic(BaseModel):
    """What an approval step asks, and who decided it, when and why."""

    message: str
    approvers: list[str]
    """Token names that may decide; empty: any token with the trigger scope."""
    requested_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    decision: ApprovalDecision | None = None
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
    reused: bool = False
    """Taken over by a retry from an earlier execution (see ``original``); this
    execution's timestamps stay empty and its timing zero."""
    original: OriginalRunPublic | None = None
    matrix: MatrixInstancePublic | None = None
    """Set on an instance of a matrix step."""
    approval: ApprovalPublic | None = None
    """Set on an approval step once it asked for a decision."""
    runs_on: list[str] = []
    """The labels a worker needs to run the step."""
    worker_id: str | None = None
    """The worker that runs the step, or ran its latest attempt."""


class HopPublic(BaseModel):
    step: str
    released_by: Literal["dependency", "slot", "worker", "approval"]
    """What let the step start: a dependency finishing, a parallel slot freeing, a worker
    starting or resuming the execution, or an approval step's decision."""


class PathPublic(BaseModel):
    steps: list[str]
    duration_seconds: float


class CriticalPathPublic(BaseModel):
    """The chain that gated the end, walking back from the last step to finish through
    what released each step (``hops``); ``unconstrained`` is the longest chain of
    dependencies weighted by time spent running and in backoff."""

    steps: list[str]
    duration_seconds: float
    hops: list[HopPublic] = []
    unconstrained: PathPublic | None = None


class InterruptionPublic(BaseModel):
    """No worker held the execution: from its worker's last heartbeat until another one
    resumed it (null: not resumed yet)."""

    last_heartbeat_at: Timestamp
    resumed_at: Timestamp | None


class ArtifactPublic(BaseModel):
    """A file a step kept; download it from ``.../artifacts/{id}``."""

    id: int
    step: str
    path: str
    size: int
    sha256: str


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
    retry_of: int | None = None
    """The execution this one retries."""
    interruptions: list[InterruptionPublic] = []
    steps: list[StepPublic]
    artifacts: list[ArtifactPublic] = []


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
    sandbox: Literal["bwrap", "none"]
    """How this process confines the steps it runs (``ANSFLOW_SANDBOX``)."""
    sandbox_detail: str


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
    pipeline_id: int | None = Field(None, ge=1, le=MAX_INT64,
                                    description="Only this pipeline sees it")


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


# named pages: clients see ``ExecutionSummaryPage``, not ``Page_ExecutionSummary_``
class PipelinePage(Page[PipelinePublic]):
    pass


class ExecutionSummaryPage(Page[ExecutionSummary]):
    pass


class DeploymentPage(Page[DeploymentPublic]):
    pass


class WorkerStepPublic(BaseModel):
    execution_id: int
    step: str
    started_at: Timestamp | None


class WorkerPublic(BaseModel):
    """An ``ansflow worker``: live while its heartbeat is younger than the lease."""

    id: str
    host: str
    labels: list[str]
    concurrency: int
    """Steps it runs at once at most."""
    running: int
    """Steps running on it as of its last heartbeat."""
    started_at: Timestamp
    heartbeat_at: Timestamp
    live: bool
    running_steps: list[WorkerStepPublic]


class WorkerPage(Page[WorkerPublic]):
    pass
