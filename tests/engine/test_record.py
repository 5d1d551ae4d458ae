"""The execution record while an execution waits, runs and is retried: ``waiting_for``,
the live critical path, and what a retry says about the steps it reused."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from ansflow.api.views import NO_WORKER
from ansflow.db.models import PipelineExecution, StepExecution
from ansflow.db.store import Store
from ansflow.engine.executor import PipelineExecutor
from ansflow.resources import Resources
from ansflow.status import utcnow
from tests.builders import gated, pipeline_doc, step
from tests.e2e.workers import until
from tests.engine.harness import create_execution, read_record, run_doc
from tests.engine.record_checks import check_buckets, check_constrained_path, check_ready_at


async def test_a_queued_execution_waits_for_a_worker_then_its_dependencies(
        resources: Resources) -> None:
    execution_id = await create_execution(resources, pipeline_doc(
        step("a"), step("b", depends_on=["a"])))
    record = await read_record(resources, execution_id)
    waiting = {s.name: s.waiting_for for s in record.steps}
    assert waiting == {"a": [NO_WORKER], "b": ["a"]}
    assert record.critical_path is None


async def test_while_running_steps_say_what_holds_them_and_the_path_so_far(
        resources: Resources, tmp_path: Path) -> None:
    go = tmp_path / "go"
    doc = pipeline_doc(step("a", gated(go)),
                       step("b", "sleep 0.1"),
                       step("c", "true", depends_on=["a"]), max_parallel=1)
    execution_id = await create_execution(resources, doc)
    task = asyncio.create_task(PipelineExecutor(resources).execute(execution_id))

    async def a_running() -> bool:
        record = await read_record(resources, execution_id)
        return any(s.name == "a" and s.status == "running" for s in record.steps)

    await until(a_running, 30, "a to run")
    record = await read_record(resources, execution_id)
    steps = {s.name: s for s in record.steps}
    assert steps["b"].waiting_for == ["a parallel slot (1 of 1 in use)"]
    assert steps["b"].ready_at == record.started_at  # ready, held back by the slot
    assert steps["c"].waiting_for == ["a"] and steps["c"].ready_at is None
    assert record.critical_path is not None and record.critical_path.steps == ["a"]
    assert steps["a"].timing.running > 0
    go.touch()
    assert (await task).status.value == "success"
    record = await read_record(resources, execution_id)
    check_buckets(record)
    check_ready_at(record)
    check_constrained_path(record, 1)
    # b comes before c in the file, so b took the slot a freed and c waited for b's
    assert record.critical_path is not None
    assert [(h.step, h.released_by) for h in record.critical_path.hops] == [
        ("a", "worker"), ("b", "slot"), ("c", "slot")]


async def test_a_lost_worker_and_an_approval_are_named(resources: Resources) -> None:
    """Rows as a crashed worker leaves them: running, its lease run out, an attempt open."""
    execution_id = await create_execution(resources, pipeline_doc(
        step("build"), step("gate"), step("docs")))
    started = utcnow() - timedelta(seconds=30)
    heartbeat = started + timedelta(seconds=4)
    async with resources.db.session() as session:
        store = Store(session)
        execution = await store.get_execution(execution_id)
        rows = {a.name: r for a, r in await store.step_rows(execution)}
        await session.execute(update(PipelineExecution).where(
            PipelineExecution.id == execution_id).values(
            status="running", started_at=started, worker_id="gone", heartbeat_at=heartbeat,
            lease_expires_at=heartbeat + timedelta(seconds=5)))
        await session.execute(update(StepExecution).where(
            StepExecution.id == rows["build"].id).values(
            status="running", ready_at=started, started_at=started + timedelta(seconds=1),
            attempts=[{"number": 1, "status": "running", "completed_at": None,
                       "started_at": (started + timedelta(seconds=1)).isoformat()}]))
        await session.execute(update(StepExecution).where(
            StepExecution.id == rows["gate"].id).values(status="waiting", ready_at=started))
        await session.commit()
    record = await read_record(resources, execution_id)
    steps = {s.name: s for s in record.steps}
    assert steps["docs"].waiting_for == [NO_WORKER]
    assert steps["gate"].waiting_for == ["an approval by a token with the trigger scope"]
    assert [(i.last_heartbeat_at, i.resumed_at) for i in record.interruptions] == [
        (heartbeat, None)]
    build = steps["build"].timing
    assert build.running == 3.0  # until the last heartbeat, not until now
    assert build.interrupted >= 26.0
    assert build.waiting_for_slot == 1.0


async def test_a_retry_links_its_original_and_keeps_reused_runs_apart(
        resources: Resources) -> None:
    doc = pipeline_doc(
        step("build", "sleep 0.3"),
        step("test", "test -f fixed || exit 1", depends_on=["build"]),
        step("ship", "sleep 0.1", depends_on=["test"]),
    )
    first = await run_doc(resources, doc)
    assert first.status == "failed"
    async with resources.db.session() as session:
        store = Store(session)
        retry = await store.create_retry(await store.get_execution(first.record.id))
        await store.commit()
    workspace = resources.settings.workspace_root / str(first.record.id)
    (workspace / "fixed").write_text("yes")
    await PipelineExecutor(resources).execute(retry.id)
    record = await read_record(resources, retry.id)
    assert record.status == "success" and record.retry_of == first.record.id
    build, test = (next(s for s in record.steps if s.name == n) for n in ("build", "test"))
    original = first.step("build")
    assert build.reused and not test.reused
    assert (build.started_at, build.completed_at, build.ready_at, build.attempts) == (
        None, None, None, [])
    assert build.original is not None and build.original.execution_id == first.record.id
    assert (build.original.started_at, build.original.completed_at) == (
        original.started_at, original.completed_at)
    assert [a.status for a in build.original.attempts] == ["success"]
    assert build.timing.running == 0.0 and build.slack_seconds is None
    assert test.ready_at == record.started_at
    assert record.critical_path is not None and record.critical_path.steps == ["test", "ship"]
    assert record.critical_path.duration_seconds <= (record.duration_seconds or 0)
    check_buckets(record)
    check_ready_at(record)
    check_constrained_path(record, 5)
