"""Worker presence: each ``ansflow worker`` notes itself every heartbeat; the API lists
them with the steps they run, and the step dispatch asks whether a live one has a set
of labels."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ansflow.db.models import AtomicStep, StepExecution, Worker
from ansflow.db.writes import rowcount
from ansflow.status import StepStatus, utcnow

RUNNING = (StepStatus.RUNNING.value, StepStatus.RETRYING.value)


async def beat(conn: AsyncConnection, worker_id: str, host: str, labels: Sequence[str],
               concurrency: int, running: int, started_at: datetime) -> None:
    """Note the worker alive now (its row made on the first beat; a worker started again
    under the same id takes its row over). One upsert: an UPDATE of a missing row
    followed by an INSERT locks the gap first, and workers starting together then
    deadlock on each other's gaps."""
    values = {"host": host, "labels": list(labels), "concurrency": concurrency,
              "running": running, "started_at": started_at, "heartbeat_at": utcnow()}
    if conn.dialect.name == "sqlite":
        await conn.execute(sqlite.insert(Worker).values(id=worker_id, **values)
                           .on_conflict_do_update(index_elements=["id"], set_=values))
    else:
        upsert = mysql.insert(Worker).values(id=worker_id, **values)
        await conn.execute(upsert.on_duplicate_key_update(
            **{name: upsert.inserted[name] for name in values}))


async def remove(conn: AsyncConnection, worker_id: str) -> None:
    await conn.execute(delete(Worker).where(Worker.id == worker_id))


async def forget(conn: AsyncConnection, before: datetime) -> int:
    """Drop the rows of workers silent since ``before`` (crashed ones)."""
    return rowcount(await conn.execute(delete(Worker).where(Worker.heartbeat_at < before)))


async def workers(session: AsyncSession) -> list[Worker]:
    return list((await session.scalars(select(Worker).order_by(Worker.started_at,
                                                               Worker.id))).all())


async def live_labels(session: AsyncSession | AsyncConnection, since: datetime
                      ) -> list[frozenset[str]]:
    """The label sets of the workers heard from since ``since``."""
    rows = await session.execute(select(Worker.labels).where(Worker.heartbeat_at >= since))
    return [frozenset(labels or []) for (labels,) in rows.all()]


async def running_steps(session: AsyncSession, worker_ids: Sequence[str]
                        ) -> dict[str, list[dict[str, Any]]]:
    """The steps each of ``worker_ids`` runs: ``{execution_id, step, started_at}``."""
    rows = await session.execute(
        select(StepExecution.worker_id, StepExecution.pipeline_execution_id,
               AtomicStep.name, StepExecution.started_at)
        .join(AtomicStep, AtomicStep.id == StepExecution.atomic_step_id)
        .where(StepExecution.worker_id.in_(list(worker_ids)),
               StepExecution.status.in_(RUNNING))
        .order_by(StepExecution.pipeline_execution_id, AtomicStep.name))
    found: dict[str, list[dict[str, Any]]] = {}
    for worker_id, execution_id, name, started_at in rows.all():
        found.setdefault(str(worker_id), []).append(
            {"execution_id": execution_id, "step": name, "started_at": started_at})
    return found


async def waiting_by_labels(session: AsyncSession) -> dict[tuple[str, ...], int]:
    """Handed-over steps no worker took yet, by the labels they need."""
    rows = await session.execute(
        select(AtomicStep.runs_on)
        .join(StepExecution, StepExecution.atomic_step_id == AtomicStep.id)
        .where(StepExecution.dispatch.is_not(None),
               StepExecution.status == StepStatus.PENDING.value))
    counts: dict[tuple[str, ...], int] = {}
    for (labels,) in rows.all():
        key = tuple(sorted(labels or []))
        counts[key] = counts.get(key, 0) + 1
    return counts
