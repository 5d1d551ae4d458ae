"""PipelineExecutor: claim an execution, run its DAG, finalize it.

A step starts the moment its own dependencies are complete and a parallel slot is free
(never level by level). The executor only schedules; ``StepExecutor`` runs a step and
``DbRecorder`` writes every change before anyone hears of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from ansflow.db import groups
from ansflow.db.store import Store
from ansflow.engine.concurrency import RECHECK, StepGroups, Waker, event_key, execution_group, wake
from ansflow.engine.loader import load_execution
from ansflow.engine.recorder import DbRecorder, Listener
from ansflow.engine.scheduler import Scheduler
from ansflow.errors import map_errors
from ansflow.resources import Resources
from ansflow.status import ExecutionStatus, StepStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    execution_id: int
    status: ExecutionStatus
    ran: bool
    """False when this call did not run it (already terminal, or held by another worker)."""


class PipelineExecutor:
    """Runs executions with the given resources. Safe to call for the same id more than
    once, from any number of workers: only the lease holder runs it (at-least-once queues
    deliver twice), a terminal execution returns at once. ``waker`` dispatches parked
    executions that this one's end lets go on (a freed concurrency group)."""

    def __init__(self, resources: Resources, listeners: list[Listener] | None = None,
                 waker: Waker | None = None) -> None:
        self.resources = resources
        self.listeners = listeners or []
        self.waker = waker

    async def execute(self, execution_id: int) -> ExecutionResult:
        if execution_id in self.resources.running:
            logger.info("execution %s: already running in this process", execution_id)
            return ExecutionResult(execution_id, ExecutionStatus.RUNNING, False)
        self.resources.running.add(execution_id)
        try:
            return await self._execute(execution_id)
        finally:
            self.resources.running.discard(execution_id)

    async def _execute(self, execution_id: int) -> ExecutionResult:
        settings, db = self.resources.settings, self.resources.db
        worker = self.resources.worker_id
        with map_errors(f"claiming execution {execution_id}"):
            async with db.session() as session:
                store = Store(session)
                execution = await store.get_execution(execution_id)
                group = (None if ExecutionStatus(execution.status).terminal
                         else execution_group(execution.options, execution.trigger))
                was_parked = execution.parked_at is not None
                await session.commit()  # a group's row is locked before any execution's
            claimed = await self._claim(execution_id, group)
            async with db.session() as session:
                store = Store(session)
                if not claimed:
                    execution = await store.get_execution(execution_id)
                    logger.info("execution %s: not claimed (status %s, held by %s)",
                                execution_id, execution.status, execution.worker_id)
                    return ExecutionResult(execution_id, ExecutionStatus(execution.status), False)
                state, options = await load_execution(store, execution_id, settings)
                options = replace(options, was_parked=was_parked)
        recorder = DbRecorder(db, execution_id, worker, settings.lease_seconds, self.listeners,
                              self.resources.bus)
        step_groups = StepGroups(db, execution_id, self.waker)
        status = await Scheduler(recorder, state, options, settings, step_groups).run()
        if group is not None and status.terminal and not recorder.lease_lost:
            await self._leave(execution_id, group[0])
        return ExecutionResult(execution_id, status, True)

    async def _claim(self, execution_id: int, group: tuple[str, bool] | None) -> bool:
        """Claim it; with a concurrency group, in the transaction that takes the group."""
        settings, db = self.resources.settings, self.resources.db
        worker = self.resources.worker_id
        if group is None:
            async with db.session() as session:
                claimed = await Store(session).claim(execution_id, worker, settings.lease_seconds)
                await session.commit()
                return claimed
        name, cancel_in_progress = group
        entry, claimed = await groups.transaction(db, lambda conn: groups.claim(
            conn, execution_id, worker, settings.lease_seconds, name,
            cancel_in_progress=cancel_in_progress, recheck=RECHECK),
            f"claiming execution {execution_id}")
        if entry.outcome != "hold":
            logger.info("execution %s: %s in concurrency group %r (%s)", execution_id,
                        "waits" if entry.outcome == "wait" else "superseded", name,
                        entry.other and groups.describe(entry.other))
        await wake(self.waker, entry.wake, event_key("entered", name))
        return claimed

    async def _leave(self, execution_id: int, name: str) -> None:
        waiter = await groups.transaction(
            self.resources.db, lambda conn: groups.leave(conn, name, (execution_id, None)),
            f"leaving concurrency group {name!r}")
        if waiter is not None:
            await wake(self.waker, [waiter], event_key("released", name))


__all__ = ["ExecutionResult", "PipelineExecutor", "StepStatus"]
