"""The in-memory picture of one execution's steps, and what a step's process sees."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ansflow.spec import expr
from ansflow.spec.model import RetryPolicy
from ansflow.status import StepStatus
from ansflow.steps.files import hash_files
from ansflow.trust.masking import Masker

V = TypeVar("V")

# satisfied = dependents may run on it; continue_on_error turns a failure into satisfied
SATISFIED = {StepStatus.SUCCESS}


class StepDefinitionRow(Protocol):
    """What the engine reads of a stored step definition (the recorder loads it)."""

    id: int
    name: str
    step_type: str
    dependency_ids: list[Any]
    config: dict[str, Any]
    env: dict[str, Any]
    condition: str | None
    timeout_seconds: float | None
    retry: dict[str, Any] | None
    continue_on_error: bool
    order: int
    network: bool
    artifacts: list[Any] | None
    cache: dict[str, Any] | None
    matrix: dict[str, Any] | None
    concurrency: dict[str, Any] | None
    runs_on: list[Any] | None


class StepStateRow(Protocol):
    """What the engine reads of a stored step execution (the recorder loads it)."""

    id: int
    status: str
    attempt: int
    attempts: list[Any]
    outputs: dict[str, Any]
    ready_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    backoff_seconds: float
    log_bytes: int
    manifest: str | None
    result: dict[str, Any]
    decision: dict[str, Any] | None
    worker_id: str | None
    lease_expires_at: datetime | None


@dataclass(slots=True)
class StepRuntime:
    """One step of the running execution: its definition and its current state."""

    row_id: int
    name: str
    type: str
    depends_on: list[str]
    config: dict[str, Any]
    env: dict[str, str]
    condition: expr.Expression
    timeout: float | None
    retry: RetryPolicy | None
    continue_on_error: bool
    order: int
    status: StepStatus
    network: bool = True
    attempt: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    ready_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    backoff_seconds: float = 0.0
    log_bytes: int = 0
    stop_status: StepStatus | None = None
    """Set by the executor just before it cancels the step: the status to record."""
    artifacts: list[str] = field(default_factory=list)
    cache: dict[str, Any] | None = None
    manifest: str | None = None
    """The digest of what the step changed in the workspace, once it succeeded."""
    stop_reason: str | None = None
    """Why it was stopped, when not the execution's cancel or timeout."""
    matrix_of: str | None = None
    """The matrix step this step is an instance of."""
    matrix: dict[str, Any] = field(default_factory=dict)
    matrix_max_parallel: int | None = None
    matrix_fail_fast: bool = False
    concurrency: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] | None = None
    """Taken on a waiting step and not yet carried out (``db/parking.py``)."""
    labels: list[str] = field(default_factory=list)
    """The labels a worker needs to run the step (``runs_on``)."""
    worker_id: str | None = None
    """The worker that runs or ran the step."""
    lease_expires_at: datetime | None = None
    """Set while another worker than the execution's holder runs the step: its lease."""

    @classmethod
    def from_rows(cls, atomic: StepDefinitionRow, row: StepStateRow, names: Mapping[int, str]
                  ) -> StepRuntime:
        matrix = atomic.matrix or {}
        return cls(
            row_id=row.id, name=atomic.name, type=atomic.step_type,
            depends_on=[names[i] for i in atomic.dependency_ids], config=dict(atomic.config),
            env=dict(atomic.env), condition=expr.parse_condition(atomic.condition or "success()"),
            timeout=atomic.timeout_seconds,
            retry=RetryPolicy.model_validate(atomic.retry) if atomic.retry else None,
            continue_on_error=atomic.continue_on_error, order=atomic.order,
            network=atomic.network,
            status=StepStatus(row.status), attempt=row.attempt, attempts=list(row.attempts),
            outputs=dict(row.outputs), ready_at=row.ready_at, started_at=row.started_at,
            completed_at=row.completed_at, backoff_seconds=row.backoff_seconds,
            log_bytes=row.log_bytes, artifacts=list(atomic.artifacts or []),
            cache=atomic.cache, manifest=row.manifest,
            matrix_of=matrix.get("of"),
            matrix=dict(matrix.get("values") or {}),
            matrix_max_parallel=matrix.get("max_parallel"),
            matrix_fail_fast=bool(matrix.get("fail_fast")), concurrency=atomic.concurrency,
            result=dict(row.result or {}), decision=row.decision,
            labels=list(atomic.runs_on or []), worker_id=row.worker_id,
            lease_expires_at=row.lease_expires_at,
        )

    def update_from(self, row: StepStateRow) -> None:
        """Take the committed state of the step (another worker ran it, or runs it)."""
        self.status = StepStatus(row.status)
        self.attempt, self.attempts = row.attempt, list(row.attempts)
        self.outputs = dict(row.outputs)
        self.ready_at, self.started_at = row.ready_at, row.started_at
        self.completed_at, self.backoff_seconds = row.completed_at, row.backoff_seconds
        self.log_bytes, self.manifest = row.log_bytes, row.manifest
        self.worker_id, self.lease_expires_at = row.worker_id, row.lease_expires_at
        self.result, self.decision = dict(row.result or {}), row.decision

    @property
    def satisfied(self) -> bool:
        """Whether dependents may treat this step as done well."""
        return self.status in SATISFIED or (self.status == StepStatus.FAILED
                                            and self.continue_on_error)

    @property
    def broken(self) -> bool:
        """Failed or timed out without ``continue_on_error``: fails the execution."""
        return self.status in (StepStatus.FAILED, StepStatus.TIMED_OUT) and not self.satisfied


def interrupt_attempt(attempts: list[dict[str, Any]], at: datetime,
                      status: str = "interrupted") -> None:
    """The running attempt of a lost worker ended at ``at``, its last heartbeat (never
    before the attempt began)."""
    if attempts and attempts[-1].get("status") in ("running", None):
        started = attempts[-1].get("started_at")
        ended = max(at, datetime.fromisoformat(started)) if started else at
        attempts[-1].update(status=status, completed_at=ended.isoformat())


def stop_message(status: StepStatus) -> str:
    """The error recorded on a step stopped from outside."""
    return ("the execution timed out" if status == StepStatus.TIMED_OUT
            else "the execution was cancelled")


def worker_environment() -> dict[str, str]:
    """The worker's own environment; a step sees only what ``Sandbox.environment`` keeps
    of it."""
    return dict(os.environ)


_SECRET_REF = re.compile(r"""secrets(?:\.([A-Za-z_][A-Za-z0-9_-]*)|\[\s*['"]([^'"]+)['"]\s*\])""")


def secret_names(texts: list[str]) -> set[str]:
    """Names of the secrets referenced as ``secrets.NAME`` in expressions of ``texts``."""
    return {a or b for text in texts if "secrets" in text
            for a, b in _SECRET_REF.findall(text)}


_HEREDOC = re.compile(r"^([A-Za-z_][A-Za-z0-9_.-]*)<<(\S+)$")
MAX_OUTPUTS_BYTES = 1024 * 1024


def read_outputs(path: Path) -> dict[str, str]:
    """Parse ``$ANSFLOW_OUTPUT``: ``key=value`` lines, and ``key<<EOF`` blocks for
    multi-line values (the GitHub Actions format). Capped at 1 MiB like GitHub."""
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        text = handle.read(MAX_OUTPUTS_BYTES).decode("utf-8", errors="replace")
    outputs: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if match := _HEREDOC.match(line):
            key, marker = match.groups()
            block = []
            for inner in lines:
                if inner == marker:
                    break
                block.append(inner)
            outputs[key] = "\n".join(block)
        elif "=" in line:
            key, _, value = line.partition("=")
            if key.strip():
                outputs[key.strip()] = value
    return outputs


@dataclass(slots=True)
class ExecutionState:
    """Everything the steps of one execution share while it runs."""

    id: int
    pipeline_id: int
    pipeline_name: str
    pipeline_version: int
    trigger: dict[str, Any]
    env: dict[str, str]
    workspace: Path
    outputs_dir: Path
    steps: dict[str, StepRuntime]
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    """The last heartbeat of the worker that held the execution before this one."""
    meta: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    """Decrypted secrets visible to this execution's pipeline, by name."""
    secrets_problem: str | None = None
    """Why stored secrets could not be read (no ANSFLOW_SECRET_KEY), if so."""
    masker: Masker = field(default_factory=Masker)
    matrices: dict[str, list[str]] = field(default_factory=dict)
    """Instance names by matrix step name (as written)."""
    _upstream: dict[str, bool] = field(default_factory=dict)
    worker_id: str = ""
    """The worker that runs steps of this state in this process (recorded on each)."""
    stopping: StepStatus | None = None
    """``cancelled`` once a cancel or fail-fast began, ``timed_out`` once the whole
    execution ran out of time; pending steps then do not start."""

    @property
    def variables(self) -> dict[str, Any]:
        return dict(self.trigger.get("variables") or {})

    def eval_context(self, step: StepRuntime, env: Mapping[str, str] | None = None
                     ) -> expr.EvalContext:
        deps = [self.steps[d] for d in step.depends_on]
        return expr.EvalContext(
            trigger=expr.trigger_context(self.trigger),
            env=dict(env if env is not None else self.env),
            vars=self.variables,
            secrets=self.secrets,
            steps=step_views(self.steps, self.matrices),
            matrix=step.matrix,
            success=all(d.satisfied for d in deps),
            failure=any(d.broken or self._failed_upstream(d) for d in deps),
            cancelled=self.stopping is not None,
            hash_files=functools.partial(hash_files, self.workspace),
        )

    def ancestors(self, step: StepRuntime) -> list[str]:
        """Every step ``step`` depends on, directly or not, by name."""
        seen: set[str] = set()
        stack = list(step.depends_on)
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(self.steps[name].depends_on)
        return sorted(seen)

    def _failed_upstream(self, step: StepRuntime) -> bool:
        """Whether any ancestor of ``step`` broke (for ``failure()``); memoized once the
        step is terminal, since an ancestor's status never changes after its own end."""
        known = self._upstream.get(step.name)
        if known is not None:
            return known
        broken = any(self.steps[d].broken or self._failed_upstream(self.steps[d])
                     for d in step.depends_on)
        if step.status.terminal:
            self._upstream[step.name] = broken
        return broken


class StepValues(Mapping[str, V]):
    """A value per step, read on access: an execution of n steps would otherwise build n
    of them for each of its n steps (``steps.*`` in expressions, statuses for notify)."""

    def __init__(self, steps: Mapping[str, StepRuntime], read: Callable[[StepRuntime], V]
                 ) -> None:
        self._steps = steps
        self._read = read

    def __getitem__(self, name: str) -> V:
        return self._read(self._steps[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._steps)

    def __len__(self) -> int:
        return len(self._steps)


class StepViews(Mapping[str, expr.StepView]):
    """``steps.*`` of expressions: every step by name, and every matrix step by its
    written name with the aggregate of its instances (``aggregate_status``; outputs
    merged in instance order, a later instance's value winning)."""

    def __init__(self, steps: Mapping[str, StepRuntime], matrices: Mapping[str, list[str]]
                 ) -> None:
        self._steps = steps
        self._matrices = matrices

    def __getitem__(self, name: str) -> expr.StepView:
        step = self._steps.get(name)
        if step is not None:
            return expr.StepView(step.status.value, step.outputs)
        instances = [self._steps[n] for n in self._matrices[name]]
        outputs: dict[str, str] = {}
        for instance in instances:
            outputs.update(instance.outputs)
        return expr.StepView(aggregate_status(instances), outputs)

    def __iter__(self) -> Iterator[str]:
        yield from self._steps
        yield from (name for name in self._matrices if name not in self._steps)

    def __len__(self) -> int:
        return len(self._steps) + sum(1 for n in self._matrices if n not in self._steps)


def aggregate_status(instances: list[StepRuntime]) -> str:
    """One status for a matrix step: while any instance is unfinished, ``running`` (one
    runs or retries), ``waiting`` or ``pending``; then ``failed`` (any instance broke),
    ``timed_out``, ``cancelled``, ``skipped`` (all were), else ``success``."""
    statuses = {i.status for i in instances}
    for unfinished in (StepStatus.RUNNING, StepStatus.RETRYING, StepStatus.WAITING,
                       StepStatus.PENDING):
        if unfinished in statuses:
            return (StepStatus.RUNNING if unfinished == StepStatus.RETRYING
                    else unfinished).value
    if any(i.status == StepStatus.FAILED and not i.continue_on_error for i in instances):
        return StepStatus.FAILED.value
    for status in (StepStatus.TIMED_OUT, StepStatus.CANCELLED):
        if status in statuses:
            return status.value
    if statuses == {StepStatus.SKIPPED}:
        return StepStatus.SKIPPED.value
    return StepStatus.SUCCESS.value


def step_views(steps: Mapping[str, StepRuntime],
               matrices: Mapping[str, list[str]] | None = None) -> StepViews:
    return StepViews(steps, matrices or {})


def step_statuses(steps: Mapping[str, StepRuntime]) -> StepValues[str]:
    return StepValues(steps, lambda step: step.status.value)
