"""The synchronous facades drive the same engine from plain threads."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ansflow.config import Settings
from ansflow.db.store import Store
from ansflow.engine.sync import SyncPipelineExecutor, SyncStepExecutor
from ansflow.errors import Conflict
from ansflow.resources import Resources
from ansflow.status import ExecutionStatus, StepStatus
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution, read_record


async def _create_many(settings: Settings, count: int) -> list[int]:
    async with Resources.open(settings) as resources:
        return [await create_execution(resources, pipeline_doc(
            step("a", "sleep 0.2; echo a"), step("b", "echo b", depends_on=["a"]),
            step("c", "echo c", depends_on=["a"]))) for _ in range(count)]


async def _create(settings: Settings, doc: dict[str, Any]) -> int:
    async with Resources.open(settings) as resources:
        return await create_execution(resources, doc)


async def _records(settings: Settings, ids: list[int]) -> list[str]:
    async with Resources.open(settings) as resources:
        return [(await read_record(resources, i)).status for i in ids]


def test_eight_threads_each_run_an_execution(settings: Settings) -> None:
    ids = asyncio.run(_create_many(settings, 8))
    barrier = threading.Barrier(8)

    def run(execution_id: int) -> ExecutionStatus:
        barrier.wait()
        return SyncPipelineExecutor(settings).execute(execution_id).status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(run, ids))
    assert statuses == [ExecutionStatus.SUCCESS] * 8
    assert asyncio.run(_records(settings, ids)) == ["success"] * 8


def test_a_second_run_of_a_finished_execution_does_nothing(settings: Settings) -> None:
    [execution_id] = asyncio.run(_create_many(settings, 1))
    first = SyncPipelineExecutor(settings).execute(execution_id)
    again = SyncPipelineExecutor(settings).execute(execution_id)
    assert (first.ran, again.ran) == (True, False)
    assert again.status == ExecutionStatus.SUCCESS


def test_sync_step_executor_runs_one_step(settings: Settings) -> None:
    [execution_id] = asyncio.run(_create_many(settings, 1))
    mine = settings.model_copy(update={"worker_id": "step-runner-1"})
    assert SyncStepExecutor(mine).run(execution_id, "a") == StepStatus.SUCCESS
    assert SyncStepExecutor(mine).run(execution_id, "a") == StepStatus.SUCCESS  # already done
    other = settings.model_copy(update={"worker_id": "step-runner-2"})
    with pytest.raises(Conflict, match="held by another worker"):
        SyncStepExecutor(other).run(execution_id, "b")



async def _intrude(settings: Settings, execution_id: int) -> bool:
    """Once the step runs, wait past its lease, try to take the execution over, then ask
    to cancel it; True when the takeover was refused."""
    async with Resources.open(settings) as resources:
        for _ in range(600):
            if (await read_record(resources, execution_id)).steps[0].status == "running":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(settings.lease_seconds * 2)
        async with resources.db.session() as session:
            store = Store(session)
            taken = await store.claim(execution_id, "intruder", settings.lease_seconds)
            await store.request_cancel(await store.get_execution(execution_id))
            await store.commit()
        return not taken


async def _step_status(settings: Settings, execution_id: int) -> str:
    async with Resources.open(settings) as resources:
        return (await read_record(resources, execution_id)).steps[0].status


def test_sync_step_executor_keeps_its_lease_and_obeys_a_cancel(settings: Settings) -> None:
    fast = settings.model_copy(update={"worker_id": "step-runner", "lease_seconds": 2.0})
    execution_id = asyncio.run(_create(fast, pipeline_doc(step("silent", "sleep 30"))))
    with ThreadPoolExecutor(1) as pool:
        refused = pool.submit(asyncio.run, _intrude(fast, execution_id))
        # silent for far longer than the lease: only the heartbeat keeps the execution
        status = SyncStepExecutor(fast).run(execution_id, "silent")
    assert refused.result(), "the lease lapsed while the step ran"
    assert status == StepStatus.CANCELLED
    assert asyncio.run(_step_status(fast, execution_id)) == "cancelled"
