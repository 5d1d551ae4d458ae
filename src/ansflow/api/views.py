"""Turn rows into the public execution record (shared by the API and ``ansflow run``)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from ansflow.api.schemas import (
    ApprovalPublic,
    ArtifactPublic,
    AttemptPublic,
    CriticalPathPublic,
    DagPublic,
    DagStep,
    ExecutionPublic,
    ExecutionSummary,
    HopPublic,
    InterruptionPublic,
    LogPublic,
    MatrixInstancePublic,
    OriginalRunPublic,
    PathPublic,
    PipelinePublic,
    StepPublic,
    TimingPublic,
    TriggerPublic,
)
from ansflow.db import groups
from ansflow.db.artifacts import artifacts_of
from ansflow.db.models import (
    Artifact,
    AtomicStep,
    Pipeline,
    PipelineExecution,
    StepExecution,
    StepLog,
)
from ansflow.db.store import Store
from ansflow.db.workers import live_labels
from ansflow.spec.graph import Dag, critical_path
from ansflow.spec.matrix import plan_steps
from ansflow.spec.model import PipelineSpec
from ansflow.spec.timeline import (
    ExecutionTrace,
    Interruption,
    StepTrace,
    analyze,
    parse_attempts,
    parse_instant,
)
from ansflow.status import TERMINAL_STEP, ExecutionStatus, StepStatus, utcnow

LIVE_SECONDS = 30.0
"""A worker heard from this recently is live (the default lease)."""


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


async def execution_record(store: Store, execution: PipelineExecution,
                           live_seconds: float = LIVE_SECONDS, *, created: bool = False
                           ) -> ExecutionPublic:
    """``live_seconds``: a worker heard from that recently is live (the lease).
    ``created``: the execution was made in this transaction, so no worker has touched it
    yet: it has no artifacts and is in no concurrency group (two queries fewer)."""
    now = utcnow()
    rows = await store.step_rows(execution)
    live = None
    if any(row.status == StepStatus.PENDING and (atomic.runs_on or row.dispatch)
           for atomic, row in rows):
        live = await live_labels(store.session, now - timedelta(seconds=live_seconds))
    view = _RecordView(execution, rows, now, live)
    if not created:
        view.groups = await groups.waits_of(await store.session.connection(), execution.id)
    return ExecutionPublic(
        id=execution.id, pipeline_id=execution.pipeline_id,
        pipeline_name=str(execution.options.get("pipeline_name", "")),
        pipeline_version=execution.pipeline_version, status=execution.status,
        trigger=trigger_public(execution), queued_at=execution.queued_at,
        started_at=execution.started_at, completed_at=execution.completed_at,
        duration_seconds=_duration(execution), critical_path=view.critical_path(),
        error=execution.error, cancel_requested=execution.cancel_requested_at is not None,
        retry_of=execution.retry_of_id,
        interruptions=[InterruptionPublic(last_heartbeat_at=i.last_heartbeat_at,
                                          resumed_at=i.resumed_at)
                       for i in view.trace.interruptions],
        steps=[view.step(atomic, row) for atomic, row in view.rows],
        artifacts=[] if created else [artifact_public(a) for a in
                                      await artifacts_of(store.session, execution.id)],
    )


def artifact_public(artifact: Artifact) -> ArtifactPublic:
    return ArtifactPublic(id=artifact.id, step=artifact.step, path=artifact.path,
                          size=artifact.size, sha256=artifact.sha256)


NO_WORKER = "no worker has claimed this execution"
HOLDS_SLOT = (StepStatus.RUNNING.value, StepStatus.RETRYING.value)


class _RecordView:
    """One reading of an execution's rows: the timeline (``spec/timeline.py``) is built
    once and every step's timing, slack and ``waiting_for`` come from it."""

    def __init__(self, execution: PipelineExecution,
                 rows: list[tuple[AtomicStep, StepExecution]], now: datetime,
                 live: list[frozenset[str]] | None = None) -> None:
        self.execution = execution
        self.live = live or []
        """The label sets of the live workers (read when a step may wait for one)."""
        self.rows = rows
        names = {atomic.id: atomic.name for atomic, _ in rows}
        self.depends_on = {atomic.name: [names[i] for i in atomic.dependency_ids]
                           for atomic, _ in rows}
        self.by_name = {atomic.name: row for atomic, row in rows}
        meta = execution.meta or {}
        self.limit = int(meta.get("max_parallel") or execution.options.get("max_parallel")
                         or 5)
        self.in_use = sum(1 for _, row in rows if row.status in HOLDS_SLOT)
        self.atomic = {atomic.name: atomic for atomic, _ in rows}
        self.matrix_in_use = Counter(atomic.matrix["of"] for atomic, row in rows
                                     if atomic.matrix and row.status in HOLDS_SLOT)
        self.groups: dict[int | None, tuple[str, int | None]] = {}
        """Concurrency groups the execution (key None) or a step waits for."""
        self.unclaimed = _unclaimed(execution, now)
        self.ready_at = {atomic.name: self._ready_at(atomic.name, row) for atomic, row in rows}
        self.trace = ExecutionTrace(
            started_at=execution.started_at, now=execution.completed_at or now,
            max_parallel=self.limit, interruptions=self._interruptions(),
            steps={atomic.name: StepTrace(
                name=atomic.name, type=atomic.step_type,
                depends_on=tuple(self.depends_on[atomic.name]),
                ready_at=self.ready_at[atomic.name], completed_at=row.completed_at,
                attempts=tuple(parse_attempts(row.attempts)),
                backoff_seconds=row.backoff_seconds, reused=row.original is not None)
                for atomic, row in rows})
        self.timings, self.path = analyze(self.trace)

    def _ready_at(self, name: str, row: StepExecution) -> datetime | None:
        """As recorded, or for a step still waiting: when its last dependency ended (a
        reused one counts as done at the start), the execution's start for a root."""
        started = self.execution.started_at
        if row.ready_at is not None or row.status in TERMINAL_STEP or started is None:
            return row.ready_at
        deps = [self.by_name[d] for d in self.depends_on[name]]
        if any(dep.status not in TERMINAL_STEP for dep in deps):
            return None
        return max([started, *(dep.completed_at for dep in deps if dep.completed_at)])

    def _interruptions(self) -> tuple[Interruption, ...]:
        stored = (self.execution.meta or {}).get("interruptions") or []
        found = [Interruption(moment, parse_instant(item.get("resumed_at")))
                 for item in stored
                 if (moment := parse_instant(item.get("last_heartbeat_at"))) is not None]
        started = self.execution.started_at
        if (started is not None and self.unclaimed
                and self.execution.status == ExecutionStatus.RUNNING):
            found.append(Interruption(self.execution.heartbeat_at or started, None))
        return tuple(found)

    def critical_path(self) -> CriticalPathPublic | None:
        if self.execution.started_at is None:
            return None
        path = self.path
        return CriticalPathPublic(
            steps=path.steps, duration_seconds=path.duration_seconds,
            hops=[HopPublic(step=h.step, released_by=h.released_by) for h in path.hops],
            unconstrained=PathPublic(steps=path.unconstrained.steps,
                                     duration_seconds=path.unconstrained.duration_seconds))

    def step(self, atomic: AtomicStep, row: StepExecution) -> StepPublic:
        name = atomic.name
        return StepPublic(
            name=name, type=atomic.step_type, status=row.status,
            depends_on=self.depends_on[name], ready_at=self.ready_at[name],
            started_at=row.started_at, completed_at=row.completed_at,
            exit_code=row.exit_code, attempts=[_attempt(a) for a in row.attempts],
            timing=TimingPublic(**asdict(self.timings[name])),
            slack_seconds=self.path.slack_seconds.get(name),
            waiting_for=self.waiting_for(atomic, row), outputs=row.outputs or {},
            result=row.result or {}, error=row.error, error_code=row.error_code,
            reused=row.original is not None, original=_original(row.original),
            matrix=_matrix(atomic), approval=_approval(atomic, row),
            runs_on=list(atomic.runs_on or []), worker_id=row.worker_id,
        )

    def waiting_for(self, atomic: AtomicStep, row: StepExecution) -> list[str]:
        """Why a step that is not running does not run yet."""
        if ExecutionStatus(self.execution.status).terminal:
            return []
        if row.status == StepStatus.WAITING and row.decision is not None:
            return [f"the execution to resume ({row.decision.get('verdict')})"]
        if row.status == StepStatus.WAITING:
            approvers = ", ".join(row.result.get("approvers") or [])
            return [f"an approval by {approvers or 'a token with the trigger scope'}"]
        if row.status != StepStatus.PENDING:
            return []
        unfinished = [d for d in self.depends_on[atomic.name]
                      if self.by_name[d].status not in TERMINAL_STEP]
        if unfinished:
            return unfinished
        if (group := self.groups.get(row.id) or self.groups.get(None)) is not None:
            holder = f" (held by execution {group[1]})" if group[1] else ""
            return [f"the concurrency group {group[0]!r}{holder}"]
        if self.unclaimed:
            return [NO_WORKER]
        labels = sorted(atomic.runs_on or [])
        if labels and not any(w.issuperset(labels) for w in self.live):
            return [f"a worker with labels [{', '.join(labels)}]"]
        if row.dispatch is not None:
            return [f"a free worker with labels [{', '.join(labels)}]" if labels
                    else "a free worker"]
        return [self._matrix_slot(atomic.name) or
                f"a parallel slot ({self.in_use} of {self.limit} in use)"]

    def _matrix_slot(self, name: str) -> str | None:
        matrix = self.atomic[name].matrix or {}
        limit, of = matrix.get("max_parallel"), matrix.get("of")
        if limit is None or of is None or self.matrix_in_use[of] < limit:
            return None
        return (f"a slot of matrix step {of!r} ({self.matrix_in_use[of]} of {limit} "
                "instances running)")


def _unclaimed(execution: PipelineExecution, now: datetime) -> bool:
    """Whether no live worker holds the execution: never claimed, handed back, or its
    holder's lease ran out (a crash)."""
    if ExecutionStatus(execution.status).terminal or execution.parked_at is not None:
        return False  # parked: waits for a decision or a concurrency group, on purpose
    if execution.status == ExecutionStatus.QUEUED or execution.worker_id is None:
        return True
    expires = execution.lease_expires_at
    return expires is None or expires < now


def _matrix(atomic: AtomicStep) -> MatrixInstancePublic | None:
    if not atomic.matrix:
        return None
    return MatrixInstancePublic(name=atomic.name, step=atomic.matrix["of"],
                                values=atomic.matrix.get("values") or {})


def _approval(atomic: AtomicStep, row: StepExecution) -> ApprovalPublic | None:
    result, decision = row.result or {}, row.decision or {}
    if atomic.step_type != "approval" or "approvers" not in result:
        return None
    return ApprovalPublic(
        message=result.get("message") or "", approvers=result.get("approvers") or [],
        requested_at=parse_instant(result.get("requested_at")),
        expires_at=parse_instant(result.get("expires_at")),
        decision=decision.get("verdict"), decided_by=decision.get("by"),
        decided_at=parse_instant(decision.get("at")), comment=decision.get("comment"))


def _attempt(raw: dict[str, Any]) -> AttemptPublic:
    return AttemptPublic(number=raw.get("number", 0), status=raw.get("status", "unknown"),
                         started_at=parse_instant(raw.get("started_at")),
                         completed_at=parse_instant(raw.get("completed_at")),
                         exit_code=raw.get("exit_code"), error=raw.get("error"),
                         worker=raw.get("worker"))


def _original(raw: dict[str, Any] | None) -> OriginalRunPublic | None:
    if raw is None:
        return None
    return OriginalRunPublic(
        execution_id=int(raw.get("execution_id") or 0),
        ready_at=parse_instant(raw.get("ready_at")),
        started_at=parse_instant(raw.get("started_at")),
        completed_at=parse_instant(raw.get("completed_at")),
        attempts=[_attempt(a) for a in raw.get("attempts") or []])


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


def dag_view(spec: PipelineSpec, durations: dict[str, float] | None = None) -> DagPublic:
    """Levels and the critical path of a valid definition (matrix steps expanded):
    weighed by ``durations`` (past runs' step durations) when there are any, else every
    step the same."""
    planned = plan_steps(spec)
    dag = Dag({p.name: p.spec.depends_on for p in planned},
              order={p.name: p.spec.order for p in planned})
    durations = durations or {}
    steps = [DagStep(name=p.name, type=p.spec.type, depends_on=list(p.spec.depends_on),
                     estimated_seconds=durations.get(p.name)) for p in planned]
    matrices: dict[str, list[MatrixInstancePublic]] = {}
    for p in planned:
        if p.matrix_of is not None:
            matrices.setdefault(p.matrix_of, []).append(
                MatrixInstancePublic(name=p.name, step=p.matrix_of, values=dict(p.values)))
    if not durations:
        path = critical_path(dag, {p.name: 1.0 for p in planned})
        return DagPublic(valid=True, levels=dag.levels(), matrices=matrices,
                         critical_path=path.steps, estimated_duration_seconds=None,
                         estimate_basis="step_count", steps=steps)
    path = critical_path(dag, {p.name: durations.get(p.name, 0.0) for p in planned})
    return DagPublic(valid=True, levels=dag.levels(), matrices=matrices,
                     critical_path=path.steps,
                     estimated_duration_seconds=round(path.duration_seconds, 3),
                     estimate_basis="past_durations", steps=steps)
