"""Finds executions nobody is running and dispatches them again.

Covers a crash between commit and enqueue (queued, never claimed) and a worker that died
holding an execution (its lease expired). Any number of sweepers may run at once: a
re-dispatch is harmless because only the lease holder runs an execution.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from ansflow.db.models import utcnow
from ansflow.db.store import Store
from ansflow.dispatch import Dispatcher
from ansflow.errors import AnsFlowError
from ansflow.resources import Resources

logger = logging.getLogger(__name__)


async def sweep_once(resources: Resources, dispatcher: Dispatcher) -> list[int]:
    settings = resources.settings
    queued_before = utcnow() - timedelta(seconds=settings.sweep_queued_after_seconds)
    async with resources.db.session() as session:
        orphans = await Store(session).orphaned_executions(queued_before)
    for execution_id in orphans:
        logger.warning("execution %s: orphaned (queued too long or lease expired), "
                       "dispatching it again", execution_id)
        await dispatcher.dispatch(execution_id, resume=True)
    return orphans


async def sweep_forever(resources: Resources, dispatcher: Dispatcher) -> None:
    """For processes without arq's cron (the in-process backend of ``ansflow serve``)."""
    while True:
        try:
            await sweep_once(resources, dispatcher)
        except AnsFlowError as exc:
            logger.warning("sweeper: %s", exc.message)
        await asyncio.sleep(resources.settings.sweep_interval_seconds)
