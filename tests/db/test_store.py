"""Store queries and the engine's write path on both backends: leases and fencing, final
statuses, orphans, log windows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from ansflow.api.views import log_view
from ansflow.config import Settings
from ansflow.db import writes
from ansflow.db.batch import LogAppend, StepChange, Write, apply_batch
from ansflow.db.models import PipelineExecution, StepExecution
from ansflow.db.store import Store
from ansflow.resources import Resources
from ansflow.status import utcnow
from tests.builders import parse, pipeline_doc, step

LEASE = 30.0


@pytest.fixture
async def db(any_settings: Settings) -> AsyncIterator[Resources]:
    async with Resources.open(any_settings) as opened:
        yield opened


async def new_execution(db: Resources, *steps: str) -> int:
    spec = parse(pipeline_doc(*[step(name) for name in steps or ("only",)]))
    async with db.db.session() as session:
        store = Store(session)
        pipeline = await store.create_pipeline(spec, "{}", "json")
        execution = await store.create_execution(pipeline, spec, "api", {})
        await store.commit()
        return execution.id


async def set_execution(db: Resources, execution_id: int, **values: object) -> None:
    async with db.db.session() as session:
        await session.execute(update(PipelineExecution)
                              .where(PipelineExecution.id == execution_id).values(**values))
        await session.commit()


async def execution(db: Resources, execution_id: int) -> PipelineExecution:
    async with db.db.session() as session:
        return await Store(session).get_execution(execution_id)


async def claim(db: Resources, execution_id: int, worker: str) -> bool:
    async with db.db.session() as session:
        store = Store(session)
        claimed = await store.claim(execution_id, worker, LEASE)
        await store.commit()
        return claimed


async def renew(db: Resources, execution_id: int, worker: str) -> bool:
    """The recorder's fence: every write transaction of the engine starts with it."""
    async with db.db.engine.begin() as conn:
        return await writes.fence(conn, execution_id, worker, LEASE)


async def write(db: Resources, change: Write) -> Any:
    async with db.db.engine.begin() as conn:
        [result] = await apply_batch(conn, [change])
        return result


async def test_a_lease_is_held_until_it_expires_and_then_fences_the_old_holder(
        db: Resources) -> None:
    execution_id = await new_execution(db)
    assert await claim(db, execution_id, "worker-a")
    held = await execution(db, execution_id)
    assert held.worker_id == "worker-a" and held.lease_expires_at is not None
    assert held.lease_expires_at > utcnow() + timedelta(seconds=LEASE - 5)

    assert not await claim(db, execution_id, "worker-b"), "a live lease is not taken"
    assert await claim(db, execution_id, "worker-a"), "the holder may claim again"
    assert await renew(db, execution_id, "worker-a")
    assert not await renew(db, execution_id, "worker-b"), "only the holder renews"
    assert (await execution(db, execution_id)).worker_id == "worker-a"

    await set_execution(db, execution_id, lease_expires_at=utcnow() - timedelta(seconds=1))
    assert await claim(db, execution_id, "worker-b"), "an expired lease is taken over"
    assert (await execution(db, execution_id)).worker_id == "worker-b"
    assert not await renew(db, execution_id, "worker-a"), "the old holder is fenced off"
    assert not await claim(db, execution_id, "worker-a")
    assert await renew(db, execution_id, "worker-b")


async def test_a_released_or_finished_execution(db: Resources) -> None:
    execution_id = await new_execution(db)
    assert await claim(db, execution_id, "worker-a")
    await set_execution(db, execution_id, worker_id=None, lease_expires_at=None)
    assert await claim(db, execution_id, "worker-b"), "a released execution is free"
    await set_execution(db, execution_id, status="success")
    assert not await claim(db, execution_id, "worker-b"), "a finished execution is not run"


async def test_terminal_statuses_are_final(db: Resources) -> None:
    execution_id = await new_execution(db, "a")
    async with db.db.session() as session:
        row = await Store(session).step_by_name(execution_id, "a")
    assert await write(db, StepChange(row.id, {"status": "running", "attempt": 1}))
    assert await write(db, StepChange(row.id, {"status": "success", "exit_code": 0}))
    for change in ({"status": "failed"}, {"status": "running"}, {"exit_code": 9},
                   {"status": "pending", "error": "rewritten"}):
        assert not await write(db, StepChange(row.id, change)), change
    async with db.db.session() as session:
        final = await session.get(StepExecution, row.id)
        assert final is not None
        assert (final.status, final.exit_code, final.error, final.attempt) == (
            "success", 0, None, 1)

    async def change(**values: Any) -> bool:
        return bool(await write(db, lambda conn: writes.update_execution(conn, execution_id,
                                                                          values)))

    assert await change(status="running")
    assert await change(status="cancelled")
    assert not await change(status="success")
    assert not await change(error="late")
    ended = await execution(db, execution_id)
    assert (ended.status, ended.error) == ("cancelled", None)


async def test_orphaned_executions(db: Resources) -> None:
    now = utcnow()
    old_queued = await new_execution(db)
    await set_execution(db, old_queued, queued_at=now - timedelta(hours=1))
    fresh_queued = await new_execution(db)
    old_but_claimed = await new_execution(db)
    await set_execution(db, old_but_claimed, queued_at=now - timedelta(hours=1),
                        worker_id="w", lease_expires_at=now + timedelta(minutes=5))
    expired = await new_execution(db)
    await set_execution(db, expired, status="running", worker_id="w",
                        lease_expires_at=now - timedelta(seconds=1))
    live = await new_execution(db)
    await set_execution(db, live, status="running", worker_id="w",
                        lease_expires_at=now + timedelta(minutes=5))
    finished = await new_execution(db)
    await set_execution(db, finished, status="failed", worker_id="w",
                        queued_at=now - timedelta(hours=1),
                        lease_expires_at=now - timedelta(hours=1))
    handed_back = await new_execution(db)  # its worker stopped and released it
    await set_execution(db, handed_back, status="running", worker_id=None,
                        lease_expires_at=None)
    async with db.db.session() as session:
        # the MariaDB database is shared by the whole run: look only at ours
        found = set(await Store(session).orphaned_executions(now - timedelta(seconds=10),
                                                            limit=100_000))
    ours = {old_queued, fresh_queued, old_but_claimed, expired, live, finished, handed_back}
    assert found & ours == {old_queued, expired, handed_back}


async def test_read_log_windows_by_offset(db: Resources) -> None:
    execution_id = await new_execution(db, "a")
    async with db.db.session() as session:
        row_id = (await Store(session).step_by_name(execution_id, "a")).id
    # 0..30 in three chunks, a gap where 30..50 was dropped, then 50..60
    for offset, text in ((0, "aaaaaaaaa\n"), (10, "bbbbbbbbb\n"), (20, "ccccéccc\n"),
                         (50, "eeeeeeeee\n")):
        await write(db, LogAppend(row_id, offset, text, len(text.encode())))

    async def window(offset: int, max_bytes: int) -> list[int]:
        async with db.db.session() as session:
            return [c.offset for c in await Store(session).read_log(row_id, offset, max_bytes)]

    assert await window(0, 1000) == [0, 10, 20, 50]
    assert await window(0, 25) == [0, 10], "stops before going past max_bytes"
    assert await window(0, 3) == [0], "one chunk at least, however small the window"
    assert await window(15, 1000) == [10, 20, 50], "the chunk holding the offset comes first"
    assert await window(30, 1000) == [50]
    assert await window(59, 1000) == [50]
    assert await window(60, 1000) == []

    async with db.db.session() as session:
        store = Store(session)
        view = log_view(list(await store.read_log(row_id, 15, 1000)), 15, 60, True)
        assert view.content == ("bbbb\nccccéccc\n[ansflow] ... 20 bytes of log left out ...\n"
                                "eeeeeeeee\n")
        assert (view.offset, view.next_offset, view.truncated_bytes, view.complete) == (
            15, 60, 20, True)
        partial = log_view(list(await store.read_log(row_id, 0, 25)), 0, 60, True)
        assert (partial.content, partial.next_offset, partial.complete) == (
            "aaaaaaaaa\nbbbbbbbbb\n", 20, False)


async def test_cancelling_an_unclaimed_execution_ends_it_at_once(resources: Resources) -> None:
    from ansflow.engine.executor import PipelineExecutor
    from tests.builders import pipeline_doc, step
    from tests.engine.harness import create_execution, read_record

    execution_id = await create_execution(resources, pipeline_doc(step("a"), step("b")))
    async with resources.db.session() as session:
        store = Store(session)
        execution = await store.get_execution(execution_id)
        await store.request_cancel(execution)
        await store.commit()
        assert execution.status == "cancelled"
    record = await read_record(resources, execution_id)
    assert record.status == "cancelled" and record.completed_at is not None
    assert {s.status for s in record.steps} == {"cancelled"}
    result = await PipelineExecutor(resources).execute(execution_id)
    assert not result.ran
