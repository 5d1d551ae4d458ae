"""Step dispatch in the database: the row of a step handed to another worker is the
record of who runs it (``worker_id``), under which lease (``lease_expires_at``), which
hand-over is waiting in the step queue (``dispatch``) and whether its execution's holder
asked it to stop (``stop_requested``). Every function takes a connection inside a
transaction the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.db.models import PipelineExecution, StepExecution
from ansflow.db.writes import rowcount
from ansflow.status import ExecutionStatus, StepStatus, utcnow

# what the holder reads back of a handed-over step, and a claiming worker of every step
STATE_COLUMNS = (StepExecution.id, StepExecution.status, StepExecution.attempt,
                 StepExecution.attempts, StepExecution.outputs, StepExecution.ready_at,
                 StepExecution.started_at, StepExecution.completed_at,
                 StepExecution.backoff_seconds, StepExecution.log_bytes,
                 StepExecution.manifest, StepExecution.worker_id,
                 StepExecution.lease_expires_at, StepExecution.dispatch,
                 StepExecution.result, StepExecution.decision)


@dataclass(slots=True)
class StepState:
    """The changing part of a step's row."""

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
    worker_id: str | None
    lease_expires_at: datetime | None
    dispatch: str | None
    result: dict[str, Any]
    decision: dict[str, Any] | None


async def step_states(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, StepState]:
    rows = await conn.execute(select(*STATE_COLUMNS).where(StepExecution.id.in_(list(ids))))
    return {row.id: StepState(*row) for row in rows}


async def claim_step(conn: AsyncConnection, execution_id: int, step_execution_id: int,
                     token: str, worker_id: str, lease_seconds: float) -> bool:
    """Take a handed-over step: only with the hand-over's token, while the step is
    pending. (Whether its execution is being cancelled is the first heartbeat's
    question: reading the execution's row here would queue every claim behind the
    holder's writes, which lock it.)"""
    result = await conn.execute(
        update(StepExecution)
        .where(StepExecution.id == step_execution_id,
               StepExecution.pipeline_execution_id == execution_id,
               StepExecution.dispatch == token,
               StepExecution.status == StepStatus.PENDING.value)
        .values(worker_id=worker_id, dispatch=None, stop_requested=None,
                lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False))
    return rowcount(result) == 1


async def stop_request(conn: AsyncConnection, execution_id: int, step_execution_id: int
                       ) -> str | None:
    """The status a handed-over step should stop with: ``cancelled`` when its execution
    was asked to cancel or ended, what its holder asked for, else None."""
    row = (await conn.execute(
        select(PipelineExecution.status, PipelineExecution.cancel_requested_at,
               StepExecution.stop_requested)
        .join(StepExecution, StepExecution.pipeline_execution_id == PipelineExecution.id)
        .where(StepExecution.id == step_execution_id,
               PipelineExecution.id == execution_id))).first()
    if row is None:
        return StepStatus.CANCELLED.value
    status, cancel_at, stop = row
    if stop:
        return str(stop)
    if cancel_at is not None or ExecutionStatus(status).terminal:
        return StepStatus.CANCELLED.value
    return None
