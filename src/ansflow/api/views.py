"""Turn rows into the public execution record (shared by the API and ``ansflow run``)."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from ansflow.api.schemas import (
    ApprovalPublic,
    AttemptPublic,
    CriticalPathPublic,
    DagPublic,
    ExecutionPublic,
    ExecutionSummary,
    LogPublic,
    MatrixInstancePublic,
    PipelinePublic,
    StepPublic,
    TimingPublic,
    TriggerPublic,
)
from ansflow.db import groups
from ansflow.db.models import AtomicStep, Pipeline, PipelineExecution, StepExecution, StepLog
from ansflow.db.store import Store
from ansflow.spec.graph import Dag, critical_path
from ansflow.spec.matrix import plan_steps
from ansflow.spec.model import PipelineSpec
from ansflow.status import ExecutionStatus, StepStatus, utcnow


def _seconds(start: datetime | None, end: datetime | None) -> float:
    if start is None or end is None:
        return 0.0
    return round(max((end - start).total_seconds(), 0.0), 6)


def trigger_public(execution: PipelineExecution) -> TriggerPublic:
    trigger = execution.trigger or {}
    return TriggerPublic(type=execution.trigger_type, ref=trigger.get("ref"),
                         commit=trigger.get("commit"), event=trigger.get("event"),
                         actor=trigger.get("actor"), variables=trigger.get("variables") or {})


def execution_summary(execution: PipelineExecution) -> ExecutionSummary:
    return ExecutionSummary(
        id=execution.id, pipeline_id=execution.pipeline_id,
        pipeline_version=execution.pipeline_version, status=execution.status,
        trigger=trigger_public(execution), queued_at=execution.queued_at,
        started_at=execution.started_at, completed_at=execution.completed_at,
        duration_seconds=_duration(execution))


def _duration(execution: PipelineExecution) -> float | None:
    if execution.started_at is None:
        return None
    return _seconds(execution.started_at, execution.completed_at or utcnow())


async def execution_record(store: Store, execution: PipelineExecution) -> ExecutionPublic:
    rows = await store.step_rows(execution)
    names = {atomic.id: atomic.name for atomic, _ in rows}
    statuses = {atomic.name: row.status for atomic, row in rows}
    limit = int(execution.options.get("max_parallel") or 5)
    meta = execution.meta or {}
    path = meta.get("critical_path")
    slack = meta.get("slack_seconds") or {}
    context = _Context(execution, names, statuses, limit, slack)
    context.groups = await groups.waits_of(await store.session.connection(), execution.id)
    for atomic, row in rows:
        if row.status in (StepStatus.RUNNING, StepStatus.RETRYING):
            context.in_use[None] += 1
            if atomic.matrix:
                context.in_use[atomic.matrix["of"]] += 1
    return ExecutionPublic(
        id=execution.id, pipeline_id=execution.pipeline_id,
        pipeline_name=str(execution.options.get("pipeline_name", "")),
        pipeline_version=execution.pipeline_version, status=execution.status,
        trigger=trigger_public(execution), queued_at=execution.queued_at,
        started_at=execution.started_at, completed_at=execution.completed_at,
        duration_seconds=_duration(execution),
        critical_path=CriticalPathPublic(**path) if path else None,
        error=execution.error, cancel_requested=execution.cancel_requested_at is not None,
        steps=[context.step(atomic, row) for atomic, row in rows],
    )


class _Context:
    def __init__(self, execution: PipelineExecution, names: dict[int, str],
                 statuses: dict[str, str], limit: int, slack: dict[str, float]) -> None:
        self.execution = execution
        self.names = names
        self.statuses = statuses
        self.in_use: Counter[str | None] = Counter()
        """Steps running: all (key None) and by matrix step."""
        self.limit = limit
        self.slack = slack
        self.groups: dict[int | None, tuple[str, int | None]] = {}
        """Concurrency groups the execution (key None) or a step waits for."""

    def step(self, atomic: AtomicStep, row: StepExecution) -> StepPublic:
        depends_on = [self.names[i] for i in atomic.dependency_ids]
        return StepPublic(
            name=atomic.name, type=atomic.step_type, status=row.status, depends_on=depends_on,
            ready_at=row.ready_at, started_at=row.started_at, completed_at=row.completed_at,
            exit_code=row.exit_code, attempts=[_attempt(a) for a in row.attempts],
            timing=self.timing(row), slack_seconds=self.slack.get(atomic.name),
            waiting_for=self.waiting_for(atomic, row, depends_on), outputs=row.outputs or {},
            result=row.result or {}, error=row.error, error_code=row.error_code,
            matrix=_matrix(atomic), approval=_approval(atomic, row),
        )

    def timing(self, row: StepExecution) -> TimingPublic:
        now = utcnow()
        running = 0.0
        for attempt in row.attempts:
            started = _parse(attempt.get("started_at"))
            if started is not None:
                ended = _parse(attempt.get("completed_at")) or (
                    now if attempt.get("status") == "running" else started)
                running += _seconds(started, ended)
        end = row.completed_at or (now if row.ready_at else None)
        span = _seconds(row.ready_at, end)
        return TimingPublic(
            waiting_for_dependencies=_seconds(self.execution.started_at, row.ready_at),
            waiting_for_slot=round(max(span - running - row.backoff_seconds, 0.0), 6),
            running=round(running, 6), backoff=round(row.backoff_seconds, 6))

    def waiting_for(self, atomic: AtomicStep, row: StepExecution, depends_on: list[str]
                    ) -> list[str]:
        if ExecutionStatus(self.execution.status).terminal:
            return []
        if row.status == StepStatus.WAITING:
            approvers = ", ".join(row.result.get("approvers") or [])
            return [f"an approval by {approvers or 'a token with the trigger scope'}"]
        if row.status != StepStatus.PENDING:
            return []
        unfinished = [d for d in depends_on if not StepStatus(self.statuses[d]).terminal]
        if unfinished:
            return unfinished
        group = self.groups.get(row.id) or self.groups.get(None)
        if group is not None:
            holder = f" (held by execution {group[1]})" if group[1] else ""
            return [f"the concurrency group {group[0]!r}{holder}"]
        matrix = atomic.matrix or {}
        limit = matrix.get("max_parallel")
        if limit is not None and self.in_use[matrix["of"]] >= limit:
            return [f"a slot of matrix step {matrix['of']!r} ({self.in_use[matrix['of']]} of "
                    f"{limit} instances running)"]
        return [f"a parallel slot ({self.in_use[None]} of {self.limit} in use)"]


def _matrix(atomic: AtomicStep) -> MatrixInstancePublic | None:
    if not atomic.matrix:
        return None
    return MatrixInstancePublic(name=atomic.name, step=atomic.matrix["of"],
                                values=atomic.matrix.get("values") or {})


def _approval(atomic: AtomicStep, row: StepExecution) -> ApprovalPublic | None:
    result = row.result or {}
    if atomic.step_type != "approval" or "approvers" not in result:
        return None
    return ApprovalPublic.model_validate(
        {k: result.get(k) for k in ApprovalPublic.model_fields} | {
            "message": result.get("message") or ""})


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _attempt(raw: dict[str, Any]) -> AttemptPublic:
    return AttemptPublic(number=raw.get("number", 0), status=raw.get("status", "unknown"),
                         started_at=_parse(raw.get("started_at")),
                         completed_at=_parse(raw.get("completed_at")),
                         exit_code=raw.get("exit_code"), error=raw.get("error"))


def log_view(chunks: list[StepLog], offset: int, total: int, complete: bool,
             limit: int | None = None) -> LogPublic:
    """Stitch chunks from ``offset`` on, at most ``limit`` bytes of log (cut at a character
    boundary); a gap (the dropped middle of an oversized log) becomes one marker line and
    counts in ``truncated_bytes``."""
    parts: list[str] = []
    position = offset
    truncated = 0
    budget = limit if limit is not None else sum(c.size for c in chunks)
    for chunk in chunks:
        if budget <= 0:
            break
        if chunk.offset > position:
            gap = chunk.offset - position
            truncated += gap
            parts.append(f"[ansflow] ... {gap} bytes of log left out ...\n")
            position = chunk.offset
        skip = position - chunk.offset
        if skip == 0 and chunk.size <= budget:
            parts.append(chunk.content)
            taken = chunk.size
        else:
            data = chunk.content.encode("utf-8")[skip:skip + budget]
            text = data.decode("utf-8", errors="ignore")
            parts.append(text)
            taken = len(text.encode("utf-8"))
        position += taken
        budget -= taken
    if not chunks and total > position:
        truncated = 0
    return LogPublic(content="".join(parts), offset=offset, next_offset=max(position, offset),
                     complete=complete and position >= total, truncated_bytes=truncated)


def pipeline_public(pipeline: Pipeline) -> PipelinePublic:
    return PipelinePublic.model_validate(pipeline, from_attributes=True)


def dag_view(spec: PipelineSpec) -> DagPublic:
    """Levels and the critical path of a valid definition, weighing every step the same
    (no timings exist before a pipeline has run)."""
    planned = plan_steps(spec)
    dag = Dag({p.name: p.spec.depends_on for p in planned},
              order={p.name: p.spec.order for p in planned})
    path = critical_path(dag, {p.name: 1.0 for p in planned})
    matrices: dict[str, list[MatrixInstancePublic]] = {}
    for p in planned:
        if p.matrix_of is not None:
            matrices.setdefault(p.matrix_of, []).append(
                MatrixInstancePublic(name=p.name, step=p.matrix_of, values=dict(p.values)))
    return DagPublic(valid=True, levels=dag.levels(), matrices=matrices,
                     critical_path=path.steps, estimated_duration_seconds=None,
                     estimate_basis="step_count")
