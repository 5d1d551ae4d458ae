"""A worker rides out a database or Redis restart in the middle of an execution.

The worker reaches MariaDB and Redis through TCP relays that the test cuts for a few
seconds (every open connection dropped, new ones refused), as a restart would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from ansflow.config import Settings
from ansflow.resources import Resources
from tests.api.conftest import TcpProxy, proxy_factory
from tests.builders import pipeline_doc, step
from tests.e2e.test_worker import _step_status, _terminal, start
from tests.e2e.workers import until, workers
from tests.engine.harness import read_record

ProxyFactory = Callable[[str, int], TcpProxy]
__all__ = ["proxy_factory"]  # the fixture, shared with the API tests


def marker_doc(marker: Path) -> dict[str, object]:
    return pipeline_doc(
        step("first", f"echo first >> {marker}"),
        # ends while the service is away: its final writes must wait for it to return
        step("slow", f"echo slow >> {marker}; sleep 1.5; echo printed-during-the-outage",
             depends_on=["first"]),
        step("last", f"echo last >> {marker}", depends_on=["slow"]),
    )


async def run_through_outage(settings: Settings, worker_settings: Settings, proxy: TcpProxy,
                             tmp_path: Path, *, may_interrupt: bool = False) -> str:
    marker = tmp_path / "ran"
    async with Resources.open(settings) as resources:
        with workers(worker_settings, tmp_path) as procs:
            execution_id = await start(resources, marker_doc(marker))
            await until(lambda: _step_status(resources, execution_id, "slow", "running"), 30,
                        "the slow step to run", procs)
            await proxy.stop()
            await asyncio.sleep(4)
            await proxy.start()
            await until(lambda: _terminal(resources, execution_id), 60, "the end", procs)
        record = await read_record(resources, execution_id)
    assert record.status == "success", (record, procs[0].output()[-3000:])
    ran = marker.read_text().split()
    assert ran.count("first") == 1 and ran.count("last") == 1, ran  # successes never rerun
    attempts = {s.name: [a.status for a in s.attempts] for s in record.steps}
    expected = [["success"], ["interrupted", "success"]] if may_interrupt else [["success"]]
    assert attempts["first"] == attempts["last"] == ["success"]
    assert attempts["slow"] in expected, attempts
    return procs[0].output()


async def test_a_database_restart_mid_run_loses_nothing(
        arq_settings: Settings, tmp_path: Path, proxy_factory: ProxyFactory) -> None:
    url = make_url(arq_settings.database_url)
    proxy = proxy_factory(url.host or "127.0.0.1", url.port or 3306)
    await proxy.start()
    through_proxy = arq_settings.model_copy(update={
        "database_url": proxy.url_for(arq_settings.database_url), "lease_seconds": 15.0})
    log = await run_through_outage(arq_settings, through_proxy, proxy, tmp_path)
    assert "the database is unavailable" in log and "retrying in" in log


async def test_a_redis_restart_mid_run_loses_nothing(
        arq_settings: Settings, tmp_path: Path, proxy_factory: ProxyFactory) -> None:
    assert arq_settings.redis_url is not None
    url = make_url(arq_settings.redis_url)
    proxy = proxy_factory(url.host or "127.0.0.1", url.port or 6379)
    await proxy.start()
    through_proxy = arq_settings.model_copy(update={
        "redis_url": f"redis://127.0.0.1:{proxy.port}/0"})
    # arq's worker dies without Redis: it hands its execution back (the running step is
    # interrupted), a new worker starts when Redis returns and its sweeper resumes it
    await run_through_outage(arq_settings, through_proxy, proxy, tmp_path, may_interrupt=True)
