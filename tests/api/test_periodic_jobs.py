"""The API's periodic jobs (sweep, schedules, retention) outlive a database outage, also
one that drops the connection in the middle of a job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url

from ansflow.config import Settings
from ansflow.queue.dispatch import Dispatcher
from ansflow.queue.sweeper import repeat
from ansflow.resources import Resources
from tests.api.conftest import TcpProxy


async def test_a_connection_lost_in_the_middle_of_a_job_only_delays_the_next_run(
        settings: Settings, proxy_factory: Callable[[str, int], TcpProxy]) -> None:
    url = make_url(settings.database_url)
    proxy = proxy_factory(url.host or "127.0.0.1", url.port or 3306)
    await proxy.start()
    behind = settings.model_copy(update={"database_url": proxy.url_for(settings.database_url),
                                         "sweep_interval_seconds": 1})
    started, finished = asyncio.Event(), []

    async def slow_job(resources: Resources, _dispatcher: Dispatcher) -> None:
        async with resources.db.session() as session:
            started.set()
            await session.execute(text("SELECT SLEEP(0.5)"))
        finished.append(True)

    async with Resources.open(behind) as resources:
        task = asyncio.create_task(repeat(slow_job, resources, None))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(started.wait(), 30)
            await proxy.stop()  # while the query runs
            await asyncio.sleep(0.2)
            assert not task.done(), task.exception()
            await proxy.start()
            for _ in range(100):
                if finished:
                    break
                await asyncio.sleep(0.1)
            assert finished, "the job never ran again after the outage"
            assert not task.done()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
