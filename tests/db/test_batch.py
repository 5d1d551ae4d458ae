"""A folded batch leaves the database exactly as applying its writes one by one would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.config import Settings
from ansflow.db.batch import LogAppend, StepChange, Write, apply_batch
from ansflow.db.models import StepExecution, StepLog
from ansflow.db.store import Store
from ansflow.resources import Resources
from tests.db.test_store import new_execution


@pytest.fixture
async def db(any_settings: Settings) -> AsyncIterator[Resources]:
    async with Resources.open(any_settings) as opened:
        yield opened


async def step_ids(db: Resources, execution_id: int, *names: str) -> list[int]:
    async with db.db.session() as session:
        store = Store(session)
        return [(await store.step_by_name(execution_id, name)).id for name in names]


async def apply(db: Resources, batch: list[Write]) -> list[Any]:
    async with db.db.engine.begin() as conn:
        return await apply_batch(conn, batch)


async def row(db: Resources, step_id: int) -> tuple[str, int | None, int, list[int]]:
    async with db.db.session() as session:
        step = await session.get_one(StepExecution, step_id)
        offsets = list(await session.scalars(select(StepLog.offset).where(
            StepLog.step_execution_id == step_id).order_by(StepLog.offset)))
        return step.status, step.exit_code, step.log_bytes, offsets


async def test_a_step_whole_life_in_one_batch(db: Resources) -> None:
    a, b = await step_ids(db, await new_execution(db, "a", "b"), "a", "b")
    results = await apply(db, [
        StepChange(a, {"status": "running", "attempt": 1}),
        LogAppend(a, 0, "one\n", 4),
        StepChange(b, {"status": "running", "attempt": 1}),
        LogAppend(a, 4, "two\n", 4),
        StepChange(a, {"status": "success", "exit_code": 0}),
        StepChange(a, {"status": "failed", "exit_code": 1}),  # after terminal: refused
        LogAppend(a, 8, "late\n", 5),  # a log's size is kept even past the verdict
        LogAppend(b, 0, "b\n", 2),
    ])
    assert results == [True, True, True, True, True, False, True, True]
    assert await row(db, a) == ("success", 0, 13, [0, 4, 8])
    assert await row(db, b) == ("running", None, 2, [0])


async def test_a_terminal_step_refuses_changes_but_records_its_log_size(db: Resources) -> None:
    (a,) = await step_ids(db, await new_execution(db, "a"), "a")
    assert await apply(db, [StepChange(a, {"status": "cancelled"})]) == [True]
    results = await apply(db, [StepChange(a, {"status": "running", "attempt": 2}),
                               LogAppend(a, 0, "x\n", 2)])
    assert results == [False, True]
    assert await row(db, a) == ("cancelled", None, 2, [0])


async def test_a_dropped_range_and_a_barrier_see_the_writes_before_them(db: Resources) -> None:
    (a,) = await step_ids(db, await new_execution(db, "a"), "a")
    seen: list[tuple[str, int]] = []

    async def barrier(conn: AsyncConnection) -> str:
        step = (await conn.execute(select(StepExecution.status, StepExecution.log_bytes)
                                   .where(StepExecution.id == a))).one()
        seen.append((step.status, step.log_bytes))
        return "read"

    results = await apply(db, [
        StepChange(a, {"status": "running", "attempt": 1}),
        LogAppend(a, 0, "head\n", 5),
        LogAppend(a, 5, "mid1\n", 5),
        LogAppend(a, 10, "mid2\n", 5),
        barrier,
        LogAppend(a, 15, "tail\n", 5, drop=(5, 15)),  # drops chunks still queued with it
        StepChange(a, {"status": "success", "exit_code": 0}),
    ])
    assert results == [True, True, True, True, "read", True, True]
    assert seen == [("running", 15)]
    assert await row(db, a) == ("success", 0, 20, [0, 15])
