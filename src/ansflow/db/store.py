"""Typed queries over one session. Callers decide when to commit."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, Insert, Select, delete, func, insert, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ansflow.db import writes
from ansflow.db.models import AtomicStep, Pipeline, PipelineExecution, StepExecution, StepLog
from ansflow.errors import Conflict, NotFound
from ansflow.spec.matrix import plan_steps
from ansflow.spec.model import PipelineSpec
from ansflow.status import ExecutionStatus, StepStatus, utcnow

T = TypeVar("T")
ACTIVE = [ExecutionStatus.QUEUED.value, ExecutionStatus.RUNNING.value]


class Store:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def commit(self) -> None:
        await self.session.commit()

    async def page(self, query: Select[T], limit: int, offset: int
                   ) -> tuple[Sequence[T], int]:
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = (await self.session.scalars(query.limit(limit).offset(offset))).all()
        return rows, int(total or 0)

    # pipelines ---------------------------------------------------------------------------

    async def get_pipeline(self, pipeline_id: int) -> Pipeline:
        pipeline = await self.session.get(Pipeline, pipeline_id)
        if pipeline is None:
            raise NotFound(f"pipeline {pipeline_id} not found")
        return pipeline

    async def find_pipeline(self, name: str) -> Pipeline | None:
        return await self.session.scalar(select(Pipeline).where(Pipeline.name == name))

    async def list_pipelines(self, limit: int, offset: int) -> tuple[Sequence[Pipeline], int]:
        return await self.page(select(Pipeline).order_by(Pipeline.id), limit, offset)

    async def create_pipeline(self, spec: PipelineSpec, definition: str, fmt: str) -> Pipeline:
        if await self.find_pipeline(spec.name) is not None:
            raise Conflict(f"a pipeline named {spec.name!r} already exists")
        pipeline = Pipeline(name=spec.name, description=spec.description, definition=definition,
                            definition_format=fmt, version=1)
        self.session.add(pipeline)
        await self.session.flush()
        await self._add_steps(pipeline, spec)
        return pipeline

    async def update_pipeline(self, pipeline: Pipeline, spec: PipelineSpec, definition: str,
                              fmt: str) -> Pipeline:
        """A new version; executions keep the steps of the version they started with."""
        if spec.name != pipeline.name and await self.find_pipeline(spec.name) is not None:
            raise Conflict(f"a pipeline named {spec.name!r} already exists")
        pipeline.name, pipeline.description = spec.name, spec.description
        pipeline.definition, pipeline.definition_format = definition, fmt
        pipeline.version += 1
        pipeline.updated_at = utcnow()
        await self.session.flush()
        await self._add_steps(pipeline, spec)
        return pipeline

    async def delete_pipeline(self, pipeline: Pipeline, *, force: bool = False) -> None:
        """Delete a pipeline with its history. Refused while executions are queued or
        running, and while it has any history unless ``force``. The pipeline row is
        locked first, so an execution created concurrently either commits before the
        count (and is counted) or finds the pipeline gone; it is never cascaded away."""
        await self._lock_pipeline(pipeline.id, shared=False)
        counts = dict((await self.session.execute(
            select(PipelineExecution.status.in_(ACTIVE), func.count())
            .where(PipelineExecution.pipeline_id == pipeline.id)
            .group_by(PipelineExecution.status.in_(ACTIVE))
            # a locking read sees the latest commits, not the transaction's first snapshot
            .with_for_update(read=True))).all())
        if counts.get(True):
            raise Conflict(f"pipeline {pipeline.id} has {counts[True]} queued or running "
                           "executions; cancel them first")
        if counts.get(False) and not force:
            raise Conflict(f"pipeline {pipeline.id} has {counts[False]} finished executions "
                           "whose history would be deleted; repeat with ?force=true")
        await self.session.delete(pipeline)

    async def _lock_pipeline(self, pipeline_id: int, *, shared: bool) -> None:
        locked = await self.session.scalar(
            select(Pipeline.id).where(Pipeline.id == pipeline_id)
            .with_for_update(read=shared))
        if locked is None:
            raise NotFound(f"pipeline {pipeline_id} not found")

    async def _add_steps(self, pipeline: Pipeline, spec: PipelineSpec) -> None:
        planned = plan_steps(spec)
        rows = {
            p.name: AtomicStep(
                pipeline_id=pipeline.id, pipeline_version=pipeline.version, name=p.name,
                step_type=p.spec.type, config=p.spec.config, order=p.spec.order,
                timeout_seconds=p.spec.timeout, continue_on_error=p.spec.continue_on_error,
                retry=p.spec.retry.model_dump() if p.spec.retry else None,
                condition=p.spec.when, env=dict(p.spec.env), dependency_ids=[],
                matrix=p.matrix_record(),
                concurrency=p.spec.concurrency.model_dump() if p.spec.concurrency else None,
                network=p.spec.network, artifacts=p.spec.artifacts or None,
                cache=p.spec.cache.model_dump() if p.spec.cache else None,
                runs_on=spec.labels_of(p.spec) or None,
            )
            for p in planned
        }
        self.session.add_all(rows.values())
        await self.session.flush()
        for p in planned:
            rows[p.name].dependency_ids = [rows[d].id for d in p.spec.depends_on]
        await self.session.flush()

    async def steps_of(self, pipeline_id: int, version: int) -> Sequence[AtomicStep]:
        return (await self.session.scalars(
            select(AtomicStep).where(AtomicStep.pipeline_id == pipeline_id,
                                     AtomicStep.pipeline_version == version)
            .order_by(AtomicStep.id))).all()

    # executions --------------------------------------------------------------------------

    async def create_execution(self, pipeline: Pipeline, spec: PipelineSpec, trigger_type: str,
                               trigger: dict[str, Any], retry_of: int | None = None
                               ) -> PipelineExecution:
        await self._lock_pipeline(pipeline.id, shared=True)  # see delete_pipeline
        execution = PipelineExecution(
            pipeline_id=pipeline.id, pipeline_version=pipeline.version,
            status=ExecutionStatus.QUEUED, trigger_type=trigger_type, trigger=trigger,
            options={"max_parallel": spec.max_parallel, "timeout": spec.timeout,
                     "fail_fast": spec.fail_fast, "env": dict(spec.env),
                     "pipeline_name": pipeline.name,
                     "concurrency": spec.concurrency and spec.concurrency.model_dump(),
                     "report_status": spec.report_status and spec.report_status.model_dump()},
            queued_at=utcnow(), meta={}, retry_of_id=retry_of,
        )
        self.session.add(execution)
        await self.session.flush()
        await self.session.execute(_insert_pending_steps(execution.id, pipeline))
        return execution

    async def delete_execution(self, execution: PipelineExecution) -> None:
        """Remove an execution that never reached a queue (its dispatch failed)."""
        await self.session.execute(
            delete(PipelineExecution).where(PipelineExecution.id == execution.id))

    async def create_retry(self, original: PipelineExecution) -> PipelineExecution:
        """A new execution of the same pipeline version and trigger. Steps that succeeded
        in ``original`` are copied as succeeded (their outputs and results reused); the
        others run again, in a copy of the original's workspace when the worker has it."""
        if not ExecutionStatus(original.status).terminal:
            raise Conflict(f"execution {original.id} is still {original.status}; "
                           "cancel it or wait for it to end")
        if original.status == ExecutionStatus.SUCCESS:
            raise Conflict(f"execution {original.id} succeeded; start a new execution instead")
        execution = PipelineExecution(
            pipeline_id=original.pipeline_id, pipeline_version=original.pipeline_version,
            status=ExecutionStatus.QUEUED, trigger_type="retry",
            trigger={**original.trigger, "retry_of": original.id},
            options={**original.options, "reuse_workspace_of": original.id},
            queued_at=utcnow(), meta={}, retry_of_id=original.id)
        self.session.add(execution)
        await self.session.flush()
        for _, row in await self.step_rows(original):
            reused = row.status == StepStatus.SUCCESS
            self.session.add(StepExecution(
                pipeline_execution_id=execution.id, atomic_step_id=row.atomic_step_id,
                status=StepStatus.SUCCESS if reused else StepStatus.PENDING, attempts=[],
                outputs=row.outputs if reused else {},
                result={**row.result, "reused_from_execution": original.id} if reused else {},
                manifest=row.manifest if reused else None,
                exit_code=row.exit_code if reused else None,
                original=_original_run(original.id, row) if reused else None))
        await self.session.flush()
        return execution

    async def get_execution(self, execution_id: int) -> PipelineExecution:
        execution = await self.session.get(PipelineExecution, execution_id)
        if execution is None:
            raise NotFound(f"execution {execution_id} not found")
        return execution

    async def list_executions(self, *, limit: int, offset: int, pipeline_id: int | None = None,
                              status: str | Sequence[str] = (),
                              trigger: str | Sequence[str] = ()
                              ) -> tuple[Sequence[PipelineExecution], int]:
        """Newest first; ``status`` and ``trigger`` match the value, or any of the values."""
        query = select(PipelineExecution).order_by(PipelineExecution.id.desc())
        if pipeline_id is not None:
            query = query.where(PipelineExecution.pipeline_id == pipeline_id)
        if status:
            query = query.where(PipelineExecution.status.in_(_values(status)))
        if trigger:
            query = query.where(PipelineExecution.trigger_type.in_(_values(trigger)))
        return await self.page(query, limit, offset)

    async def step_rows(self, execution: PipelineExecution
                        ) -> list[tuple[AtomicStep, StepExecution]]:
        rows = await self.session.execute(
            select(AtomicStep, StepExecution)
            .join(StepExecution, StepExecution.atomic_step_id == AtomicStep.id)
            .where(StepExecution.pipeline_execution_id == execution.id)
            .order_by(AtomicStep.id))
        return [(a, s) for a, s in rows.all()]

    async def recent_durations(self, pipeline_id: int, executions: int = 20
                               ) -> dict[str, float]:
        """Each step's median duration over its successful runs in the pipeline's latest
        ``executions`` executions (steps that never succeeded there are left out)."""
        latest = (select(PipelineExecution.id)
                  .where(PipelineExecution.pipeline_id == pipeline_id)
                  .order_by(PipelineExecution.id.desc()).limit(executions)).subquery()
        rows = await self.session.execute(
            select(AtomicStep.name, StepExecution.started_at, StepExecution.completed_at)
            .join(StepExecution, StepExecution.atomic_step_id == AtomicStep.id)
            .where(StepExecution.pipeline_execution_id.in_(select(latest.c.id)),
                   StepExecution.status == StepStatus.SUCCESS,
                   StepExecution.started_at.is_not(None),
                   StepExecution.completed_at.is_not(None)))
        spans: dict[str, list[float]] = {}
        for name, started, completed in rows.all():
            if started is not None and completed is not None:
                spans.setdefault(name, []).append((completed - started).total_seconds())
        return {name: round(statistics.median(values), 3) for name, values in spans.items()}

    async def step_by_name(self, execution_id: int, name: str) -> StepExecution:
        row = await self.session.scalar(
            select(StepExecution).join(AtomicStep, StepExecution.atomic_step_id == AtomicStep.id)
            .where(StepExecution.pipeline_execution_id == execution_id, AtomicStep.name == name))
        if row is None:
            raise NotFound(f"execution {execution_id} has no step named {name!r}")
        return row

    async def request_cancel(self, execution: PipelineExecution) -> bool:
        """Ask the worker holding the execution to stop it; one that no worker has
        claimed yet is cancelled right here (a later claim finds it terminal), in a
        transaction numbered like the engine's (True then: its events are the caller's
        to publish after the commit)."""
        if ExecutionStatus(execution.status).terminal:
            raise Conflict(f"execution {execution.id} already ended ({execution.status})")
        now = utcnow()
        if await writes.cancel_unclaimed(await self.session.connection(), execution.id, now,
                                         "the execution was cancelled before it started"):
            await self.session.refresh(execution)
            return True
        if execution.cancel_requested_at is None:
            execution.cancel_requested_at = now
            if execution.parked_at is not None:  # no worker holds it to notice: wake it
                execution.wake_at = now
        return False

    # leases ------------------------------------------------------------------------------

    async def claim(self, execution_id: int, worker_id: str, lease_seconds: float) -> bool:
        """Take the execution unless another worker holds a live lease on it."""
        return await writes.claim(await self.session.connection(), execution_id, worker_id,
                                  lease_seconds)

    async def orphaned_executions(self, queued_before: datetime, limit: int = 100) -> list[int]:
        return [execution_id for execution_id, _ in await self.orphans(queued_before, limit)]

    async def orphans(self, queued_before: datetime, limit: int = 100
                      ) -> list[tuple[int, datetime]]:
        """Executions nobody runs: queued for too long, running under an expired lease, or
        running but handed back by a worker that stopped (no holder: a NULL lease is
        never "< now", so it needs a condition of its own). Parked executions are not
        orphans: ``due_parked`` finds those that need a worker. Each comes with the last
        sign of life it shows (lease, heartbeat, queueing): a new one is a new orphaning."""
        now = utcnow()
        unparked = PipelineExecution.parked_at.is_(None)
        rows = await self.session.execute(
            select(PipelineExecution.id, PipelineExecution.lease_expires_at,
                   PipelineExecution.heartbeat_at, PipelineExecution.queued_at)
            .where(or_(
                (PipelineExecution.status == ExecutionStatus.QUEUED)
                & (PipelineExecution.queued_at < queued_before)
                & (PipelineExecution.worker_id.is_(None)) & unparked,
                PipelineExecution.status.in_(ACTIVE) & (PipelineExecution.lease_expires_at < now),
                (PipelineExecution.status == ExecutionStatus.RUNNING)
                & (PipelineExecution.worker_id.is_(None)) & unparked,
            )).order_by(PipelineExecution.id).limit(limit))
        return [(row[0], row[1] or row[2] or row[3]) for row in rows]

    async def due_parked(self, limit: int = 100) -> list[tuple[int, datetime]]:
        """Parked executions whose ``wake_at`` passed (a decision, a timeout), with the
        time they were parked (each parking is a distinct wake-up)."""
        rows = await self.session.execute(
            select(PipelineExecution.id, PipelineExecution.parked_at)
            .where(PipelineExecution.parked_at.is_not(None),
                   PipelineExecution.status.in_(ACTIVE),
                   PipelineExecution.wake_at < utcnow())
            .order_by(PipelineExecution.wake_at).limit(limit))
        return [(row[0], row[1]) for row in rows if row[1] is not None]

    # logs --------------------------------------------------------------------------------

    async def read_log(self, step_execution_id: int, offset: int, max_bytes: int
                       ) -> Sequence[StepLog]:
        """Chunks that end after ``offset``, in order, about ``max_bytes`` worth."""
        rows = await self.session.scalars(
            select(StepLog).where(StepLog.step_execution_id == step_execution_id,
                                  StepLog.offset + StepLog.size > offset)
            .order_by(StepLog.offset).limit(max(1, max_bytes // 4096) + 16))
        chunks: list[StepLog] = []
        total = 0
        for chunk in rows:
            if chunks and total + chunk.size > max_bytes:
                break
            chunks.append(chunk)
            total += chunk.size
        return chunks


def _original_run(execution_id: int, row: StepExecution) -> dict[str, Any]:
    """The run a reused step's result comes from; a step reused twice keeps the first."""
    if row.original is not None:
        return dict(row.original)
    return {"execution_id": execution_id, "attempts": list(row.attempts),
            **{key: None if value is None else value.isoformat() for key, value in (
                ("ready_at", row.ready_at), ("started_at", row.started_at),
                ("completed_at", row.completed_at))}}


def _insert_pending_steps(execution_id: int, pipeline: Pipeline) -> Insert:
    """One ``INSERT ... SELECT`` of the execution's step rows, all pending: one round trip,
    where reading the atomic steps and inserting them through the ORM took two."""
    columns = {
        "pipeline_execution_id": literal(execution_id), "atomic_step_id": AtomicStep.id,
        "status": literal(StepStatus.PENDING.value), "attempt": literal(0),
        "attempts": literal([], JSON), "backoff_seconds": literal(0.0),
        "outputs": literal({}, JSON), "result": literal({}, JSON), "log_bytes": literal(0),
    }
    rows = (select(*columns.values())
            .where(AtomicStep.pipeline_id == pipeline.id,
                   AtomicStep.pipeline_version == pipeline.version)
            .order_by(AtomicStep.id))
    return insert(StepExecution).from_select(list(columns), rows)


def _values(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)
