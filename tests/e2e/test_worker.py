"""``ansflow worker`` processes on MariaDB + Redis: run, cancel, crash, shut down."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from ansflow.config import Settings
from ansflow.db.store import Store
from ansflow.queue.dispatch import open_dispatcher
from ansflow.resources import Resources
from tests.api.test_health import samples
from tests.builders import gated, pipeline_doc, step
from tests.e2e.workers import until, workers
from tests.engine.harness import create_execution, read_record
from tests.steps.test_fetch_code import free_port


async def start(resources: Resources, doc: dict[str, object]) -> int:
    execution_id = await create_execution(resources, doc)  # type: ignore[arg-type]
    async with open_dispatcher(resources.settings, resources) as dispatcher:
        await dispatcher.dispatch(execution_id)
    return execution_id


async def status_of(resources: Resources, execution_id: int) -> str:
    return (await read_record(resources, execution_id)).status


async def test_a_worker_runs_an_execution_and_a_second_enqueue_is_a_no_op(
        arq_settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    doc = pipeline_doc(step("a", f"echo a >> {marker}"), step("b", "true", depends_on=["a"]))
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path) as procs:
            execution_id = await start(resources, doc)
            async with open_dispatcher(arq_settings, resources) as dispatcher:
                await dispatcher.dispatch(execution_id)
            await until(lambda: _terminal(resources, execution_id), 30, "success", procs)
        record = await read_record(resources, execution_id)
    assert record.status == "success"
    assert marker.read_text() == "a\n"


async def test_cancel_reaches_the_worker_within_two_seconds(
        arq_settings: Settings, tmp_path: Path) -> None:
    doc = pipeline_doc(step("long", "sleep 60"), step("after", depends_on=["long"]))
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path) as procs:
            execution_id = await start(resources, doc)
            await until(lambda: _step_status(resources, execution_id, "long", "running"), 30,
                        "the step to run", procs)
            async with resources.db.session() as session:
                store = Store(session)
                await store.request_cancel(await store.get_execution(execution_id))
                await store.commit()
            asked = time.monotonic()
            await until(lambda: _terminal(resources, execution_id), 10, "cancelled", procs)
            took = time.monotonic() - asked
        record = await read_record(resources, execution_id)
    assert record.status == "cancelled"
    assert {s.name: s.status for s in record.steps} == {"long": "cancelled",
                                                         "after": "cancelled"}
    assert took < 2 + arq_settings.kill_grace_seconds, took


async def test_kill_9_of_a_worker_resumes_on_another_without_rerunning_successes(
        arq_settings: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    doc = pipeline_doc(
        step("first", f"echo first >> {marker}"),
        step("slow", f"echo slow-start >> {marker}; sleep 4; echo slow-end >> {marker}",
             depends_on=["first"]),
        step("last", f"echo last >> {marker}", depends_on=["slow"]),
    )
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path, count=1) as first_worker:
            execution_id = await start(resources, doc)
            await until(lambda: _step_status(resources, execution_id, "slow", "running"), 30,
                        "the slow step to run", first_worker)
            first_worker[0].signal(signal.SIGKILL)
            first_worker[0].proc.wait(timeout=10)
        with workers(arq_settings, tmp_path / "second", count=1) as second_worker:
            await until(lambda: _terminal(resources, execution_id), 60, "resume", second_worker)
        record = await read_record(resources, execution_id)
    assert record.status == "success", record
    lines = marker.read_text().split()
    assert lines.count("first") == 1, lines
    assert lines.count("last") == 1, lines
    slow = next(s for s in record.steps if s.name == "slow")
    assert [a.status for a in slow.attempts] == ["interrupted", "success"]
    assert all(s.status == "success" for s in record.steps)


async def test_sigterm_lets_running_steps_finish_then_hands_the_rest_back(
        arq_settings: Settings, tmp_path: Path) -> None:
    marker, go = tmp_path / "ran", tmp_path / "go"
    grace = 3
    doc = pipeline_doc(
        step("short", f"{gated(go)}; echo short >> {marker}"),
        step("long", f"echo long-start >> {marker}; sleep 6; echo long-end >> {marker}",
             depends_on=["short"]),
    )
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path, shutdown_grace_seconds=grace) as procs:
            execution_id = await start(resources, doc)
            await until(lambda: _step_status(resources, execution_id, "short", "running"), 30,
                        "short to run", procs)
            procs[0].signal(signal.SIGTERM)
            asked = time.monotonic()
            go.touch()  # short ends once the worker is shutting down
            exit_code = procs[0].proc.wait(timeout=60)
            took = time.monotonic() - asked
        record = await read_record(resources, execution_id)
        statuses = {s.name: s.status for s in record.steps}
        assert exit_code == 0, procs[0].output()[-2000:]
        # the grace period plus start-up of arq's shutdown; generous for a loaded CI box
        assert took < grace + 20, took
        assert statuses["short"] == "success", (statuses, procs[0].output()[-2000:])
        assert record.status in ("running", "queued")
        # long started after short, inside the grace period, and was handed back at its end
        assert statuses["long"] == "pending", statuses
        long_step = next(s for s in record.steps if s.name == "long")
        assert [a.status for a in long_step.attempts] == ["interrupted"]
        with workers(arq_settings, tmp_path / "next") as procs:
            await until(lambda: _terminal(resources, execution_id), 60,
                        "another worker to finish it", procs)
        record = await read_record(resources, execution_id)
    assert record.status == "success", record
    lines = marker.read_text().split()
    assert lines.count("short") == 1, lines
    assert lines.count("long-end") == 1, lines


async def test_a_worker_serves_the_durations_of_what_it_ran(
        arq_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    doc = pipeline_doc(step("a"), step("b", "exit 3", depends_on=["a"]))
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path, worker_metrics_port=port) as procs:
            execution_id = await start(resources, doc)
            await until(lambda: _terminal(resources, execution_id), 30, "the end", procs)
            async with httpx.AsyncClient() as client:
                scraped = samples((await client.get(f"http://127.0.0.1:{port}/metrics")).text)
    assert scraped['ansflow_execution_duration_seconds_count{status="failed"}'] == 1
    assert scraped['ansflow_step_duration_seconds_count{status="success",type="custom"}'] == 1
    assert scraped['ansflow_step_duration_seconds_count{status="failed",type="custom"}'] == 1


async def _terminal(resources: Resources, execution_id: int) -> bool:
    return await status_of(resources, execution_id) not in ("queued", "running")


async def _step_status(resources: Resources, execution_id: int, name: str, status: str) -> bool:
    record = await read_record(resources, execution_id)
    return next(s for s in record.steps if s.name == name).status == status
