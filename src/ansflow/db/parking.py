"""Parking: an execution with nothing to run but steps that wait for the outside world
gives up its worker; deciding a waiting step wakes it.

The ``park``/``decided``/``settle_waiting`` statements run in the engine's fenced
transaction (``BatchWriter``); ``decide`` runs in a request's session. A waiting step
changes state only through an UPDATE guarded by ``status = 'waiting'``, so a decision
and the engine's own timeout or cancel can race and exactly one of them wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ansflow.db.models import AtomicStep, PipelineExecution, StepExecution
from ansflow.db.writes import rowcount
from ansflow.errors import Conflict, Forbidden, NotFound
from ansflow.status import StepStatus, utcnow

WAITING = StepStatus.WAITING.value
_FIELDS = (StepExecution.id, StepExecution.status, StepExecution.result,
           StepExecution.attempts, StepExecution.completed_at, StepExecution.error,
           StepExecution.error_code)


async def park(conn: AsyncConnection, execution_id: int, waiting: Sequence[int],
               wake_at: datetime | None) -> bool:
    """Let go of the execution (no holder, no lease) unless a step it waits for was
    decided meanwhile: the decision's wake-up could otherwise have found it still held.
    The locking read waits for a decision being committed."""
    if waiting:
        decided = (await conn.execute(
            select(StepExecution.id)
            .where(StepExecution.id.in_(waiting), StepExecution.status != WAITING)
            .with_for_update())).all()
        if decided:
            return False
    # a wake-up asked for while we held it (a concurrency group freed) is kept
    earlier = await conn.scalar(select(PipelineExecution.wake_at)
                                .where(PipelineExecution.id == execution_id).with_for_update())
    if earlier is not None and (wake_at is None or earlier < wake_at):
        wake_at = earlier
    await conn.execute(
        update(PipelineExecution).where(PipelineExecution.id == execution_id)
        .values(parked_at=utcnow(), wake_at=wake_at, worker_id=None, lease_expires_at=None))
    return True


async def decided(conn: AsyncConnection, step_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The rows of those ``step_ids`` that are no longer waiting."""
    if not step_ids:
        return []
    rows = await conn.execute(select(*_FIELDS).where(StepExecution.id.in_(step_ids),
                                                     StepExecution.status != WAITING))
    return [dict(row._mapping) for row in rows]


async def settle_waiting(conn: AsyncConnection, step_id: int, values: dict[str, Any]
                         ) -> dict[str, Any]:
    """End a waiting step with ``values`` unless it was decided first; the row as stored."""
    await conn.execute(update(StepExecution)
                       .where(StepExecution.id == step_id, StepExecution.status == WAITING)
                       .values(**values))
    row = (await conn.execute(select(*_FIELDS).where(StepExecution.id == step_id))).one()
    return dict(row._mapping)


async def wake(session: AsyncSession, execution_id: int) -> bool:
    """Mark a parked execution due now (the sweeper also finds it if a dispatch is lost).
    True when it was parked."""
    result = await session.execute(
        update(PipelineExecution)
        .where(PipelineExecution.id == execution_id, PipelineExecution.parked_at.is_not(None))
        .values(wake_at=utcnow()).execution_options(synchronize_session=False))
    return rowcount(result) == 1


async def decide(session: AsyncSession, execution_id: int, step: str, *, approved: bool,
                 by: str, approvers_only: bool, comment: str | None) -> StepExecution:
    """Approve or reject the waiting approval step named ``step`` as ``by``; wakes the
    execution. ``approvers_only``: refuse ``by`` unless the step names it (or names no
    one). The caller commits, then dispatches the execution."""
    row, step_type = await _step(session, execution_id, step)
    if step_type != "approval":
        raise Conflict(f"step {step!r} is a {step_type!r} step, not an approval")
    if row.status != WAITING:
        raise Conflict(f"step {step!r} is {row.status}, not waiting for approval")
    approvers = list(row.result.get("approvers") or [])
    if approvers_only and approvers and by not in approvers:
        raise Forbidden(f"step {step!r} may only be decided by: {', '.join(approvers)}")
    now = utcnow()
    expires = row.result.get("expires_at")
    if expires is not None and datetime.fromisoformat(expires) <= now:
        await wake(session, execution_id)
        raise Conflict(f"the approval of step {step!r} timed out at {expires}")
    verdict = "approved" if approved else "rejected"
    attempts = [dict(a) for a in row.attempts]
    if attempts:
        attempts[-1].update(status=verdict, completed_at=now.isoformat())
    values: dict[str, Any] = {
        "status": StepStatus.SUCCESS if approved else StepStatus.FAILED,
        "completed_at": now, "attempts": attempts,
        "result": {**row.result, "decision": verdict, "decided_by": by,
                   "decided_at": now.isoformat(), "comment": comment},
        "error": None if approved else f"rejected by {by}" + (f": {comment}" if comment else ""),
        "error_code": None if approved else "rejected",
    }
    result = await session.execute(
        update(StepExecution).where(StepExecution.id == row.id, StepExecution.status == WAITING)
        .values(**values).execution_options(synchronize_session=False))
    if rowcount(result) != 1:
        raise Conflict(f"step {step!r} was decided meanwhile")
    await wake(session, execution_id)
    await session.refresh(row)
    return row


async def _step(session: AsyncSession, execution_id: int, name: str
                ) -> tuple[StepExecution, str]:
    found = (await session.execute(
        select(StepExecution, AtomicStep.step_type)
        .join(AtomicStep, StepExecution.atomic_step_id == AtomicStep.id)
        .where(StepExecution.pipeline_execution_id == execution_id, AtomicStep.name == name)
    )).first()
    if found is None:
        raise NotFound(f"execution {execution_id} has no step named {name!r}")
    return found[0], found[1]
