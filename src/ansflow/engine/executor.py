"""PipelineExecutor: claim an execution, run its DAG, finalize it.

A step starts the moment its own dependencies are complete and a parallel slot is free
(never level by level). The executor only schedules; ``StepExecutor`` runs a step and
``DbRecorder`` writes every change before anyone hears of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ansflow.db.store import Store
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
    deliver twice), a terminal execution returns at once."""

    def __init__(self, resources: Resources, listeners: list[Listener] | None = None) -> None:
        self.resources = resources
        self.listeners = listeners or []

    async def execute(self, execution_id: int) -> ExecutionResult:
        settings, db = self.resources.settings, self.resources.db
        worker = self.resources.worker_id
        with map_errors(f"claiming execution {execution_id}"):
            async with db.session() as session:
                store = Store(session)
                claimed = await store.claim(execution_id, worker, settings.lease_seconds)
                await session.commit()
                if not claimed:
                    execution = await store.get_execution(execution_id)
                    logger.info("execution %s: not claimed (status %s, held by %s)",
                                execution_id, execution.status, execution.worker_id)
                    return ExecutionResult(execution_id, ExecutionStatus(execution.status), False)
                state, options = await load_execution(store, execution_id, settings)
        recorder = DbRecorder(db, execution_id, worker, settings.lease_seconds, self.listeners)
        scheduler = Scheduler(recorder, state, options, settings, self.resources.store)
        status = await scheduler.run()
        return ExecutionResult(execution_id, status, True)


__all__ = ["ExecutionResult", "PipelineExecutor", "StepStatus"]
