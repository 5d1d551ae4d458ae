"""Parking and waking at the engine level: a parked execution resumes where it stopped,
and one process never runs an execution twice at once (a wake-up or a sweeper's
re-dispatch may deliver it again while it runs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ansflow.db.models import PipelineExecution
from ansflow.db.parking import decide
from ansflow.engine.executor import PipelineExecutor
from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution, read_record


async def test_a_second_delivery_in_the_same_process_does_not_run_it_again(
        resources: Resources, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    execution_id = await create_execution(resources, pipeline_doc(
        step("once", f"echo once >> {marker}; sleep 0.5")))
    first, second = await asyncio.gather(PipelineExecutor(resources).execute(execution_id),
                                         PipelineExecutor(resources).execute(execution_id))
    assert sorted([first.ran, second.ran]) == [False, True]
    assert marker.read_text() == "once\n"
    assert resources.running == set()


async def test_a_parked_execution_resumes_after_its_decision(resources: Resources) -> None:
    gate = {"name": "gate", "type": "approval", "config": {"approvers": ["alice"]}}
    execution_id = await create_execution(resources, pipeline_doc(
        step("before"), gate, step("after", depends_on=["gate"])))
    parked = await PipelineExecutor(resources).execute(execution_id)
    assert (parked.status, parked.ran) == ("running", True)
    async with resources.db.session() as session:
        row = await session.get(PipelineExecution, execution_id)
        assert row is not None and row.parked_at is not None and row.worker_id is None
        assert row.wake_at is None  # no timeout: nothing is due until someone decides
        await decide(session, execution_id, "gate", approved=True, by="alice",
                     approvers_only=True, comment=None)
        await session.commit()
        await session.refresh(row)
        assert row.wake_at is not None
    resumed = await PipelineExecutor(resources).execute(execution_id)
    assert (resumed.status, resumed.ran) == ("success", True)
    record = await read_record(resources, execution_id)
    assert [s.status for s in record.steps] == ["success", "success", "success"]
    gate_step = next(s for s in record.steps if s.name == "gate")
    assert gate_step.approval is not None and gate_step.approval.decided_by == "alice"
    assert [a.status for a in gate_step.attempts] == ["approved"]
