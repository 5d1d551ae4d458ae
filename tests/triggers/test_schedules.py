"""Schedules: each due slot starts exactly one execution, however many schedulers race."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from ansflow.config import Settings
from ansflow.db.store import Store
from ansflow.queue.dispatch import InProcessDispatcher
from ansflow.resources import Resources
from ansflow.triggers.schedules import start_due_schedules
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution


class Recording(InProcessDispatcher):
    """Remembers what it was asked to run instead of running it."""

    def __init__(self, resources: Resources) -> None:
        super().__init__(resources)
        self.dispatched: list[int] = []

    async def dispatch(self, execution_id: int, *, resume: bool = False) -> None:
        self.dispatched.append(execution_id)


async def test_three_schedulers_start_each_slot_once(settings: Settings) -> None:
    doc = pipeline_doc(step("tick"), triggers=[{"schedule": {"cron": "*/5 * * * *"}},
                                               {"schedule": {"cron": "0 3 * * *",
                                                             "timezone": "Europe/Berlin"}}])
    async with Resources.open(settings) as resources:
        pipeline_execution = await create_execution(resources, doc)
        async with resources.db.session() as session:
            store = Store(session)
            pipeline_id = (await store.get_execution(pipeline_execution)).pipeline_id
    # 02:00 UTC is 03:00 in Berlin in winter: both schedules are due in this minute
    now = datetime(2031, 1, 15, 2, 0, 20, tzinfo=UTC)
    async with contextlib_multi(settings, 3) as opened:
        dispatchers = [Recording(r) for r in opened]
        results = await asyncio.gather(*(start_due_schedules(r, d, now)
                                         for r, d in zip(opened, dispatchers, strict=True)))
        again = await start_due_schedules(opened[0], dispatchers[0], now + timedelta(seconds=5))
    async with Resources.open(settings) as resources, resources.db.session() as session:
        store = Store(session)
        executions, _ = await store.list_executions(limit=10, offset=0, pipeline_id=pipeline_id,
                                                    trigger="schedule")
    mine = sorted(e.id for e in executions)
    assert len(mine) == 2  # one per schedule, though three schedulers raced for them
    assert set(mine) <= {e for result in results for e in result}
    assert not set(mine) & set(again)
    assert {e.trigger["slot"] for e in executions} == {"2031-01-15T02:00:00+00:00"}


async def test_a_slot_older_than_the_catchup_window_is_skipped(settings: Settings) -> None:
    doc = pipeline_doc(step("tick"), triggers=[{"schedule": {"cron": "0 4 * * *"}}])
    async with Resources.open(settings) as resources:
        first = await create_execution(resources, doc)
        late = datetime(2031, 2, 1, 4, 10, tzinfo=UTC)  # 10 minutes after the slot
        await start_due_schedules(resources, Recording(resources), late)
        async with resources.db.session() as session:
            store = Store(session)
            pipeline_id = (await store.get_execution(first)).pipeline_id
            _, scheduled = await store.list_executions(limit=1, offset=0,
                                                       pipeline_id=pipeline_id,
                                                       trigger="schedule")
        assert scheduled == 0


class contextlib_multi:
    def __init__(self, settings: Settings, count: int) -> None:
        self._managers = [Resources.open(settings) for _ in range(count)]

    async def __aenter__(self) -> list[Resources]:
        return [await m.__aenter__() for m in self._managers]

    async def __aexit__(self, *exc: object) -> None:
        for manager in self._managers:
            await manager.__aexit__(None, None, None)
