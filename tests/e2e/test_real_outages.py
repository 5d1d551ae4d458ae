"""Real outages: a private ``redis-server`` restarted without persistence (its queue is
gone) and a private ``mariadbd`` stopped for 10 s, with executions queued and running.
Every execution reaches a terminal state in bounded time, none is lost, no succeeded step
runs twice, and the API answers 503 while the service is away."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ansflow.config import Settings
from ansflow.db.database import Database
from ansflow.resources import Resources
from tests.api.conftest import assert_envelope, create, serve_app
from tests.builders import pipeline_doc, step
from tests.e2e.private_services import private_mariadb, private_redis
from tests.e2e.test_worker import start, status_of
from tests.e2e.workers import until, workers
from tests.engine.harness import read_record

TERMINAL = {"success", "failed", "cancelled", "timed_out", "error"}


def counted_doc(marker: Path, seconds: float) -> dict[str, object]:
    return pipeline_doc(
        step("a", f"echo a >> {marker}; sleep {seconds}"),
        step("b", f"echo b >> {marker}", depends_on=["a"]),
    )


async def _count(resources: Resources, ids: list[int], statuses: set[str]) -> int:
    return sum([await status_of(resources, i) in statuses for i in ids])


async def _check_ran_once(resources: Resources, runs: dict[int, Path]) -> None:
    for execution_id, marker in runs.items():
        record = await read_record(resources, execution_id)
        assert record.status == "success", record
        lines = marker.read_text().split()
        for ran in record.steps:
            statuses = [x.status for x in ran.attempts]
            # an attempt cut short by the outage may have run its command or not yet; a
            # recorded success never runs again, and no run goes unrecorded
            assert statuses[-1] == "success" and set(statuses[:-1]) <= {"interrupted"}, (
                ran.name, statuses)
            assert 1 <= lines.count(ran.name) <= len(statuses), (ran.name, lines, statuses)


async def _start_counted(resources: Resources, markers: Path, count: int, seconds: float
                         ) -> dict[int, Path]:
    runs = {}
    for n in range(count):
        marker = markers / f"run-{n}"
        runs[await start(resources, counted_doc(marker, seconds))] = marker
    return runs


async def _all_terminal(resources: Resources, ids: list[int]) -> bool:
    return await _count(resources, ids, TERMINAL) == len(ids)


async def test_redis_restarted_without_persistence_loses_no_execution(
        arq_settings: Settings, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with private_redis(tmp_path) as redis_server:
        settings = arq_settings.model_copy(update={
            "redis_url": f"redis://127.0.0.1:{redis_server.port}/0"})
        async with Resources.open(settings) as resources, serve_app(settings) as client:
            pipeline = await create(client, pipeline_doc(step("x")))
            with workers(settings, tmp_path, worker_max_jobs=5) as procs:
                runs = await _start_counted(resources, markers, 15, 2)
                ids = list(runs)
                await until(lambda: _at_least(resources, ids, "running", 5), 60,
                            "five executions running", procs)
                assert await _count(resources, ids, {"queued"}) >= 5
                redis_server.stop()  # no persistence: the queued jobs are gone with it
                refused = await client.post(f"/api/v1/pipelines/{pipeline['id']}/executions")
                assert_envelope(refused, 503, "service_unavailable")
                await asyncio.sleep(3)
                redis_server.start()
                await until(lambda: _all_terminal(resources, ids), 180,
                            "every execution to end", procs)
            await _check_ran_once(resources, runs)


async def test_mariadb_stopped_for_ten_seconds_loses_no_execution(
        arq_settings: Settings, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    with private_mariadb(tmp_path) as db_server:
        url = f"mysql+asyncmy://root@127.0.0.1:{db_server.port}"
        engine = create_async_engine(f"{url}/?charset=utf8mb4")
        async with engine.begin() as conn:
            await conn.execute(text("CREATE DATABASE ansflow CHARACTER SET utf8mb4"))
        await engine.dispose()
        settings = arq_settings.model_copy(update={
            "database_url": f"{url}/ansflow?charset=utf8mb4", "lease_seconds": 15.0})
        database = Database(settings)
        await database.upgrade()
        await database.dispose()
        with workers(settings, tmp_path, count=2) as procs:
            async with Resources.open(settings) as resources:
                runs = await _start_counted(resources, markers, 10, 4)
                ids = list(runs)
                await until(lambda: _at_least(resources, ids, "running", 10), 60,
                            "ten executions running", procs)
                async with serve_app(settings, scope="read") as client:
                    db_server.stop()
                    down = await client.get("/api/v1/executions")
                    assert_envelope(down, 503, "service_unavailable")
                    await asyncio.sleep(10)
                    db_server.start()
            async with Resources.open(settings) as resources:  # a pool from after the restart
                await until(lambda: _all_terminal(resources, ids), 180,
                            "every execution to end", procs)
                await _check_ran_once(resources, runs)


async def _at_least(resources: Resources, ids: list[int], status: str, count: int) -> bool:
    return await _count(resources, ids, {status}) >= count
