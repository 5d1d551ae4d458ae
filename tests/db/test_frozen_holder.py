"""A worker frozen (SIGSTOP, a paused VM) inside one of its write transactions keeps the
row lock its fence took on the execution. Another worker's claim must still get
through once the lease is gone: MariaDB ends a write transaction left idle for a lease
(at least 10 s), instead of InnoDB making the claim wait 50 s and then fail."""

from __future__ import annotations

import asyncio
import time

import pytest
import sqlalchemy.exc

from ansflow.config import Settings
from ansflow.db import writes
from ansflow.db.database import Database, idle_write_timeout
from ansflow.db.models import PipelineExecution
from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution


async def test_a_claim_gets_past_a_frozen_holders_open_transaction(settings: Settings
                                                                   ) -> None:
    lease = 2.0
    settings = settings.model_copy(update={"lease_seconds": lease})
    assert idle_write_timeout(settings) == 10
    async with Resources.open(settings) as resources:
        execution_id = await create_execution(resources, pipeline_doc(step("a")))
        async with resources.db.session() as session:
            # a lease that is over at once: what the database keeps when the frozen
            # holder's renewal below never commits
            assert await writes.claim(await session.connection(), execution_id, "frozen",
                                      0.001)
            await session.commit()
        frozen = Database(settings)
        try:
            async with frozen.engine.connect() as holder:
                transaction = await holder.begin()
                assert await writes.fence(holder, execution_id, "frozen", lease)
                # ... and the holder stops here, its transaction open
                began = time.monotonic()
                async with resources.db.session() as session:
                    claimed = await asyncio.wait_for(writes.claim(
                        await session.connection(), execution_id, "other", lease), timeout=40)
                    await session.commit()
                waited = time.monotonic() - began
                assert claimed
                # the 10 s idle limit (less what passed since the fence), not InnoDB's 50 s
                assert waited < 30, waited
                # the frozen holder wakes to a connection the server closed: nothing it
                # wrote in that transaction was kept
                with pytest.raises(sqlalchemy.exc.DBAPIError):
                    await transaction.commit()
        finally:
            await frozen.dispose()
        async with resources.db.session() as session:
            row = await session.get(PipelineExecution, execution_id)
            assert row is not None and row.worker_id == "other"
