"""Finds executions nobody is running and dispatches them again.

Covers a crash between commit and enqueue (queued, never claimed) and a worker that died
holding an execution (its lease expired). Any number of sweepers may run at once: a
re-dispatch is harmless because only the lease holder runs an execution.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from ansflow.db.audit import purge_before
from ansflow.db.store import Store
from ansflow.db.trust import TrustStore
from ansflow.errors import AnsFlowError, map_errors
from ansflow.queue.dispatch import Dispatcher
from ansflow.resources import Resources
from ansflow.status import utcnow
from ansflow.triggers.webhooks.inbound import REPLAY_WINDOW
from ansflow.workspace.gc import collect_garbage

logger = logging.getLogger(__name__)
GC_INTERVAL = 3600.0


async def sweep_once(resources: Resources, dispatcher: Dispatcher) -> list[int]:
    settings = resources.settings
    queued_before = utcnow() - timedelta(seconds=settings.sweep_queued_after_seconds)
    async with resources.db.session() as session:
        store = Store(session)
        orphans = await store.orphans(queued_before)
        due = await store.due_parked()
    for execution_id, last_seen in orphans:
        logger.warning("execution %s: orphaned (queued too long or lease expired), "
                       "dispatching it again", execution_id)
        # a job per minute and per orphaning: a re-dispatch that found it still running
        # (and did nothing) does not hold back the one after its worker died
        await dispatcher.dispatch(execution_id, resume=True,
                                  wake=f"orphan:{last_seen.timestamp():.6f}")
    for execution_id, parked_at in due:
        logger.info("execution %s: due (a decision or a deadline), waking it", execution_id)
        # one job per parking: sweepers everywhere agree on it, so it is queued once; a
        # worker that finds nothing due yet (its clock is behind) parks it anew
        await dispatcher.dispatch(execution_id, wake=f"due:{parked_at.timestamp():.6f}")
    return [execution_id for execution_id, _ in orphans + due]


async def forget_replays(resources: Resources, dispatcher: Dispatcher) -> int:
    """Housekeeping: delete webhook body digests older than the replay window (24 h)."""
    async with resources.db.session() as session:
        forgotten = await TrustStore(session).forget_bodies(utcnow() - REPLAY_WINDOW)
        await session.commit()
    if forgotten:
        logger.info("forgot %s webhook body digests older than %s", forgotten, REPLAY_WINDOW)
    return forgotten


async def expire_audit_events(resources: Resources, _dispatcher: Dispatcher) -> int:
    """Delete audit records older than ``ANSFLOW_AUDIT_RETENTION_DAYS``."""
    cutoff = utcnow() - timedelta(days=resources.settings.audit_retention_days)
    async with resources.db.session() as session:
        purged = await purge_before(session, cutoff)
    if purged:
        logger.info("deleted %s audit records older than %s days", purged,
                    resources.settings.audit_retention_days)
    return purged


async def expire_store(resources: Resources, _dispatcher: Dispatcher) -> int:
    """Store retention (artifacts, caches, unreferenced blobs), at most once an hour per
    process: it reads every live manifest."""
    store = resources.store
    if not store.gc_due(GC_INTERVAL):
        return 0
    collected = await collect_garbage(resources.db, store, resources.settings)
    return collected.artifacts + collected.caches + collected.blobs


Periodic = Callable[[Resources, Dispatcher], Awaitable[object]]


async def repeat(job: Periodic, resources: Resources, dispatcher: Dispatcher) -> None:
    """Run ``job`` every sweep interval, for processes without arq's cron (the API with
    the in-process or Celery backend); an unavailable database or Redis only delays it,
    whether it refuses the connection or drops it in the middle of the job."""
    name = getattr(job, "__name__", "job")
    while True:
        try:
            with map_errors(name):
                await job(resources, dispatcher)
        except AnsFlowError as exc:
            logger.warning("%s: %s", name, exc.message)
        await asyncio.sleep(resources.settings.sweep_interval_seconds)
