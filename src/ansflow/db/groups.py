"""Concurrency groups in the database: the one arbiter for every API process and worker.

Members, outcomes and the rules are those of ``spec/concurrency.py``. Every function
here runs in the caller's transaction and starts by locking the group's row (an
upsert), so transactions on one group are serialized; rows of executions and steps are
only locked after it, never before, so two of them cannot deadlock on each other.
Holders and waiters are checked with locking reads: a member that ended (its execution
or step is terminal) no longer holds or waits, whatever the row says. A newcomer with
``cancel_in_progress`` also has the holder stopped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.db import writes
from ansflow.db.models import ConcurrencyGroup, PipelineExecution, StepExecution
from ansflow.spec.concurrency import Entry, Member, describe, newer, superseded_reason
from ansflow.status import TERMINAL_EXECUTION, TERMINAL_STEP, ExecutionStatus, utcnow


async def enter(conn: AsyncConnection, name: str, me: Member, *, cancel_in_progress: bool
                ) -> Entry:
    """Take the group, or wait for it, or learn that a newer member took our place."""
    row = await _lock(conn, name)
    holder = await _alive(conn, _holder(row), waiting=False)
    waiter = await _alive(conn, _waiter(row), waiting=True)
    if holder is not None and (holder == me or holder == (me[0], None)):
        return Entry("hold")  # ours, or our execution's as a whole
    if waiter is not None and waiter != me and newer(waiter, me):
        return Entry("superseded", waiter)
    wake = []
    if waiter is not None and waiter != me:
        wake += await supersede(conn, waiter, me, name)
    if holder is None:
        await _set(conn, row["id"], holder=me, waiter=None, preempted=None)
        return Entry("hold", wake=wake)
    await _set(conn, row["id"], waiter=me)
    if cancel_in_progress:
        wake += await _preempt(conn, row["id"], holder,
                               f"cancelled: {describe(me)} started in concurrency group "
                               f"{name!r} (cancel_in_progress)")
    return Entry("wait", holder, wake)


async def claim(conn: AsyncConnection, execution_id: int, worker_id: str, lease_seconds: float,
                name: str, *, cancel_in_progress: bool, recheck: timedelta) -> tuple[Entry, bool]:
    """Claim an execution of a pipeline with a concurrency group, in one transaction:
    it holds the group and is claimed (True), or it waits queued and parked (rechecked
    after ``recheck`` should its wake-up be lost), or it was superseded and is
    cancelled."""
    me: Member = (execution_id, None)
    entry = await enter(conn, name, me, cancel_in_progress=cancel_in_progress)
    if entry.outcome == "superseded":
        assert entry.other is not None
        await supersede(conn, me, entry.other, name)
        return entry, False
    if entry.outcome == "wait":
        now = utcnow()
        await conn.execute(update(PipelineExecution)
                           .where(PipelineExecution.id == execution_id,
                                  PipelineExecution.status == ExecutionStatus.QUEUED,
                                  PipelineExecution.worker_id.is_(None))
                           .values(parked_at=now, wake_at=now + recheck))
        return entry, False
    return entry, await writes.claim(conn, execution_id, worker_id, lease_seconds)


async def leave(conn: AsyncConnection, name: str, me: Member) -> int | None:
    """Give the group up if ``me`` holds it; the waiting execution to wake, if any."""
    row = await _lock(conn, name)
    if _holder(row) != me:
        return None
    await _set(conn, row["id"], holder=None, preempted=None)
    waiter = await _alive(conn, _waiter(row), waiting=True)
    if waiter is None:
        return None
    await _wake(conn, waiter[0])
    return waiter[0]


async def preempted(conn: AsyncConnection, step_ids: list[int]) -> dict[int, str]:
    """Steps among ``step_ids`` holding a group that a newcomer asked to stop, and why."""
    if not step_ids:
        return {}
    rows = await conn.execute(
        select(ConcurrencyGroup.holder_step_id, ConcurrencyGroup.preempted)
        .where(ConcurrencyGroup.holder_step_id.in_(step_ids),
               ConcurrencyGroup.preempted.is_not(None)))
    return {row[0]: row[1] for row in rows if row[0] is not None and row[1] is not None}


async def waits_of(conn: AsyncConnection, execution_id: int
                   ) -> dict[int | None, tuple[str, int | None]]:
    """What the execution (key None) or its steps (by step execution id) wait for: the
    group's name and the execution holding it."""
    rows = await conn.execute(
        select(ConcurrencyGroup.waiter_step_id, ConcurrencyGroup.name,
               ConcurrencyGroup.holder_execution_id)
        .where(ConcurrencyGroup.waiter_execution_id == execution_id))
    return {row[0]: (row[1], row[2]) for row in rows}


async def _lock(conn: AsyncConnection, name: str) -> dict[str, Any]:
    values = {"name": name, "updated_at": utcnow()}
    if conn.dialect.name == "sqlite":
        await conn.execute(sqlite.insert(ConcurrencyGroup).values(**values)
                           .on_conflict_do_update(index_elements=["name"],
                                                  set_={"updated_at": values["updated_at"]}))
    else:
        upsert = mysql.insert(ConcurrencyGroup).values(**values)
        await conn.execute(upsert.on_duplicate_key_update(updated_at=upsert.inserted.updated_at))
    row = (await conn.execute(select(ConcurrencyGroup.__table__)
                              .where(ConcurrencyGroup.name == name).with_for_update())).one()
    return dict(row._mapping)


def _holder(row: dict[str, Any]) -> Member | None:
    execution = row["holder_execution_id"]
    return None if execution is None else (execution, row["holder_step_id"])


def _waiter(row: dict[str, Any]) -> Member | None:
    execution = row["waiter_execution_id"]
    return None if execution is None else (execution, row["waiter_step_id"])


async def _alive(conn: AsyncConnection, member: Member | None, *, waiting: bool
                 ) -> Member | None:
    """``member`` unless it ended; a waiting execution must also still be queued."""
    if member is None:
        return None
    execution, step = member
    status = await conn.scalar(select(PipelineExecution.status)
                               .where(PipelineExecution.id == execution)
                               .with_for_update(read=True))
    if status is None or status in TERMINAL_EXECUTION:
        return None
    if step is None:
        return None if waiting and status != ExecutionStatus.QUEUED else member
    step_status = await conn.scalar(select(StepExecution.status)
                                    .where(StepExecution.id == step).with_for_update(read=True))
    return None if step_status is None or step_status in TERMINAL_STEP else member


async def _set(conn: AsyncConnection, group_id: int, **values: Any) -> None:
    columns: dict[str, Any] = {"updated_at": utcnow()}
    for role in ("holder", "waiter"):
        if role in values:
            member = values.pop(role)
            columns[f"{role}_execution_id"] = member[0] if member else None
            columns[f"{role}_step_id"] = member[1] if member else None
    columns.update(values)
    await conn.execute(update(ConcurrencyGroup).where(ConcurrencyGroup.id == group_id)
                       .values(**columns))


async def supersede(conn: AsyncConnection, waiter: Member, by: Member, name: str
                    ) -> list[int]:
    """End the older waiter. A waiting execution is queued and held by no one: it is
    cancelled right here. A waiting step belongs to a running execution: that one is
    woken to cancel it (it finds itself no longer the waiter)."""
    execution, step = waiter
    if step is not None:
        await _wake(conn, execution)
        return [execution]
    reason = superseded_reason(by, name)
    await writes.cancel_unclaimed(conn, execution, utcnow(), reason, error=reason,
                                  parked_at=None, wake_at=None)
    return []


async def _preempt(conn: AsyncConnection, group_id: int, holder: Member, reason: str
                   ) -> list[int]:
    execution, step = holder
    if step is not None:  # its worker polls the group for this
        await _set(conn, group_id, preempted=reason)
        return []
    now = utcnow()
    await conn.execute(
        update(PipelineExecution)
        .where(PipelineExecution.id == execution,
               PipelineExecution.cancel_requested_at.is_(None))
        .values(cancel_requested_at=now, error=reason))
    await _wake(conn, execution)  # a parked holder (an approval) has no worker to notice
    return [execution]


async def _wake(conn: AsyncConnection, execution_id: int) -> None:
    """Due now. Also when it is not parked: a worker that parks it a moment later keeps
    the earlier wake-up (``parking.park``)."""
    await conn.execute(update(PipelineExecution).where(PipelineExecution.id == execution_id)
                       .values(wake_at=utcnow()))
