"""The engine's writes as Core statements on a connection: cheap enough for the hot path.

Every function takes an ``AsyncConnection`` inside a transaction the caller commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.db.models import PipelineExecution, StepExecution
from ansflow.status import TERMINAL_EXECUTION, TERMINAL_STEP, ExecutionStatus, StepStatus, utcnow

ACTIVE = [ExecutionStatus.QUEUED.value, ExecutionStatus.RUNNING.value]


def rowcount(result: Any) -> int:
    """Rows an UPDATE/DELETE matched (the drivers report matched rows, not changed ones)."""
    return int(getattr(result, "rowcount", 0) or 0)


async def cancel_unclaimed(conn: AsyncConnection, execution_id: int, now: datetime,
                           step_error: str, **values: Any) -> bool:
    """Cancel a queued execution no worker holds, and its unfinished steps, in a change
    numbered like the engine's (no worker will number it), so live followers see it.
    ``values``: more columns of the execution. False (nothing written) when a worker
    holds it or it is no longer queued."""
    next_seq = PipelineExecution.event_seq + 1
    result = await conn.execute(
        update(PipelineExecution)
        .where(PipelineExecution.id == execution_id,
               PipelineExecution.status == ExecutionStatus.QUEUED,
               PipelineExecution.worker_id.is_(None))
        # status_seq first: MySQL assigns left to right with the new values
        .ordered_values((PipelineExecution.status_seq, next_seq),
                        (PipelineExecution.event_seq, next_seq),
                        (PipelineExecution.status, ExecutionStatus.CANCELLED),
                        (PipelineExecution.completed_at, now),
                        (PipelineExecution.cancel_requested_at, now),
                        *((getattr(PipelineExecution, k), v) for k, v in values.items())))
    if rowcount(result) != 1:
        return False
    seq = (select(PipelineExecution.event_seq)
           .where(PipelineExecution.id == execution_id).scalar_subquery())
    await conn.execute(
        update(StepExecution)
        .where(StepExecution.pipeline_execution_id == execution_id,
               StepExecution.status.not_in(TERMINAL_STEP))
        .values(status=StepStatus.CANCELLED, completed_at=now, error=step_error,
                status_seq=seq))
    return True


async def claim(conn: AsyncConnection, execution_id: int, worker_id: str,
                lease_seconds: float) -> bool:
    """Take the execution unless another worker holds a live lease on it; a parked
    execution is unparked."""
    now = utcnow()
    result = await conn.execute(
        update(PipelineExecution)
        .where(PipelineExecution.id == execution_id,
               PipelineExecution.status.in_(ACTIVE),
               or_(PipelineExecution.worker_id.is_(None),
                   PipelineExecution.worker_id == worker_id,
                   PipelineExecution.lease_expires_at.is_(None),
                   PipelineExecution.lease_expires_at < now))
        .values(worker_id=worker_id, lease_expires_at=now + timedelta(seconds=lease_seconds),
                parked_at=None, wake_at=None))
    return rowcount(result) == 1


_FENCE = (update(PipelineExecution)
          .where(PipelineExecution.id == bindparam("target_id"),
                 PipelineExecution.worker_id == bindparam("holder"))
          .values(lease_expires_at=bindparam("until"), heartbeat_at=bindparam("beat"),
                  event_seq=PipelineExecution.event_seq + bindparam("bump")))


async def fence(conn: AsyncConnection, execution_id: int, worker_id: str,
                lease_seconds: float, bump: int = 0) -> bool:
    """Renew our lease, note the heartbeat and advance the execution's ``event_seq`` by
    ``bump``; False when another worker holds the execution. The row lock it takes keeps
    a competing claim waiting until this transaction ends."""
    now = utcnow()
    result = await conn.execute(_FENCE, {
        "target_id": execution_id, "holder": worker_id, "beat": now, "bump": bump,
        "until": now + timedelta(seconds=lease_seconds)})
    return rowcount(result) == 1


_STEP_FENCE = (update(StepExecution)
               .where(StepExecution.id.in_(bindparam("ids", expanding=True)),
                      StepExecution.worker_id == bindparam("holder"))
               .values(lease_expires_at=bindparam("until")))
_BUMP = (update(PipelineExecution).where(PipelineExecution.id == bindparam("target_id"))
         .values(event_seq=PipelineExecution.event_seq + bindparam("bump")))


async def step_fence(conn: AsyncConnection, execution_id: int, step_execution_ids: list[int],
                     worker_id: str, lease_seconds: float, bump: int = 0) -> bool:
    """``fence`` for a worker that runs steps of an execution another worker holds:
    renew our lease on each of the steps; False once the execution's holder took one of
    them back. The execution's row is locked first (to number the events), as the
    holder's writes lock it before the step rows: one lock order, no deadlock."""
    if bump:
        await conn.execute(_BUMP, {"target_id": execution_id, "bump": bump})
    if not step_execution_ids:
        return True
    result = await conn.execute(_STEP_FENCE, {
        "ids": step_execution_ids, "holder": worker_id,
        "until": utcnow() + timedelta(seconds=lease_seconds)})
    return rowcount(result) == len(step_execution_ids)


async def event_seq(conn: AsyncConnection, execution_id: int) -> int:
    value = await conn.scalar(select(PipelineExecution.event_seq)
                              .where(PipelineExecution.id == execution_id))
    return int(value or 0)


async def update_execution(conn: AsyncConnection, execution_id: int, values: dict[str, Any]
                           ) -> bool:
    result = await conn.execute(
        update(PipelineExecution)
        .where(PipelineExecution.id == execution_id,
               PipelineExecution.status.not_in(TERMINAL_EXECUTION))
        .values(**values))
    return rowcount(result) == 1


async def cancel_requested(conn: AsyncConnection, execution_id: int) -> bool:
    value = await conn.scalar(select(PipelineExecution.cancel_requested_at.is_not(None))
                              .where(PipelineExecution.id == execution_id))
    return bool(value)


async def release(conn: AsyncConnection, execution_id: int) -> bool:
    result = await conn.execute(update(PipelineExecution)
                                .where(PipelineExecution.id == execution_id)
                                .values(worker_id=None, lease_expires_at=None))
    return rowcount(result) == 1
