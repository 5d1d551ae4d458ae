"""Deleting a pipeline never cascades away an execution being created at the same time."""

from __future__ import annotations

import asyncio

import pytest

from ansflow.db.models import PipelineExecution
from ansflow.db.store import Store
from ansflow.errors import Conflict, NotFound
from ansflow.resources import Resources
from tests.builders import parse, pipeline_doc, step


async def _pipeline(resources: Resources) -> int:
    spec = parse(pipeline_doc(step("only")))
    async with resources.db.session() as session:
        pipeline = await Store(session).create_pipeline(spec, "{}", "json")
        await session.commit()
        return pipeline.id


async def _delete(resources: Resources, pipeline_id: int) -> None:
    async with resources.db.session() as session:
        store = Store(session)
        await store.delete_pipeline(await store.get_pipeline(pipeline_id))
        await session.commit()


async def test_a_delete_waits_for_an_uncommitted_execution_then_refuses(
        resources: Resources) -> None:
    pipeline_id = await _pipeline(resources)
    spec = parse(pipeline_doc(step("only")))
    async with resources.db.session() as creating:
        store = Store(creating)
        execution = await store.create_execution(await store.get_pipeline(pipeline_id), spec,
                                                 "api", {})
        deleting = asyncio.create_task(_delete(resources, pipeline_id))
        await asyncio.sleep(0.5)  # the delete is now blocked on the pipeline row's lock
        assert not deleting.done()
        await creating.commit()
    with pytest.raises(Conflict, match="queued or running"):
        await deleting
    async with resources.db.session() as session:
        assert await session.get(PipelineExecution, execution.id) is not None


async def test_an_execution_created_during_a_delete_finds_the_pipeline_gone(
        resources: Resources) -> None:
    pipeline_id = await _pipeline(resources)
    spec = parse(pipeline_doc(step("only")))
    async with resources.db.session() as deleting:
        store = Store(deleting)
        await store.delete_pipeline(await store.get_pipeline(pipeline_id))

        async def create() -> None:
            async with resources.db.session() as session:
                other = Store(session)
                pipeline = await other.get_pipeline(pipeline_id)  # still visible: not committed
                await other.create_execution(pipeline, spec, "api", {})
                await session.commit()

        creating = asyncio.create_task(create())
        await asyncio.sleep(0.5)
        assert not creating.done()
        await deleting.commit()
    with pytest.raises(NotFound):
        await creating
