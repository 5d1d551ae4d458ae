"""Parking: an execution with nothing to run but steps that wait for the outside world
gives up its worker; deciding a waiting step wakes it.

A waiting step has one decision slot (``step_execution.decision``). Whoever fills it
first decides: a person (``decide``, from a request), or the engine when the approval
times out or the execution stops (``claim_decision``); the fill is an UPDATE guarded by
``decision IS NULL``, so such a race has exactly one outcome. Only the engine then moves
the step to its verdict, as one of its own numbered changes (live followers see it).
``park``, ``decided`` and ``claim_decision`` run in the engine's fenced transaction.
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
Decision = dict[str, Any]
"""``{verdict, by, at, comment}``; verdict ``approved``, ``rejected``, ``timed_out`` (no
decision in time) or ``cancelled`` (the execution stopped first)."""


def _open(step_id: int) -> Any:
    return ((StepExecution.id == step_id) & (StepExecution.status == WAITING)
            & StepExecution.decision.is_(None))


async def park(conn: AsyncConnection, execution_id: int, waiting: Sequence[int],
               wake_at: datetime | None) -> bool:
    """Let go of the execution (no holder, no lease) unless a step it waits for was
    decided meanwhile: the decision's wake-up could otherwise have found it still held.
    The locking read waits for a decision being committed."""
    if waiting:
        decided = (await conn.execute(
            select(StepExecution.id)
            .where(StepExecution.id.in_(waiting), StepExecution.decision.is_not(None))
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


async def decided(conn: AsyncConnection, step_ids: Sequence[int]) -> dict[int, Decision]:
    """The decisions taken on those of ``step_ids`` that still wait, by step id."""
    if not step_ids:
        return {}
    rows = await conn.execute(select(StepExecution.id, StepExecution.decision)
                              .where(StepExecution.id.in_(step_ids),
                                     StepExecution.status == WAITING,
                                     StepExecution.decision.is_not(None)))
    return {row[0]: row[1] for row in rows}


async def claim_decision(conn: AsyncConnection, step_id: int, decision: Decision
                         ) -> Decision:
    """Fill the waiting step's decision slot unless it is filled; the decision in it."""
    await conn.execute(update(StepExecution).where(_open(step_id)).values(decision=decision))
    stored = await conn.scalar(select(StepExecution.decision)
                               .where(StepExecution.id == step_id))
    return dict(stored or decision)


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
    """Approve or reject the waiting approval step named ``step`` as ``by``, and wake the
    execution (its worker moves the step on). ``approvers_only``: refuse ``by`` unless
    the step names it (or names no one). The caller commits, then dispatches."""
    row, step_type = await _step(session, execution_id, step)
    if step_type != "approval":
        raise Conflict(f"step {step!r} is a {step_type!r} step, not an approval")
    if row.status != WAITING or row.decision is not None:
        verdict = (row.decision or {}).get("verdict") or row.status
        raise Conflict(f"step {step!r} is not waiting for approval ({verdict})")
    approvers = list(row.result.get("approvers") or [])
    if approvers_only and approvers and by not in approvers:
        raise Forbidden(f"step {step!r} may only be decided by: {', '.join(approvers)}")
    now = utcnow()
    expires = row.result.get("expires_at")
    if expires is not None and datetime.fromisoformat(expires) <= now:
        await wake(session, execution_id)
        raise Conflict(f"the approval of step {step!r} timed out at {expires}")
    decision = {"verdict": "approved" if approved else "rejected", "by": by,
                "at": now.isoformat(), "comment": comment}
    result = await session.execute(update(StepExecution).where(_open(row.id))
                                   .values(decision=decision)
                                   .execution_options(synchronize_session=False))
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
