"""PipelineExecutor: claim an execution, run its DAG, finalize it.

A step starts the moment its own dependencies are complete and a parallel slot is free
(never level by level). The executor only schedules; ``StepExecutor`` runs a step and
the ``Recorder`` writes every change before anyone hears of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ansflow.engine.concurrency import StepGroups, Waker, event_key, wake
from ansflow.engine.placement import StepQueue
from ansflow.engine.recorder import DbRecorder, Listener, NotClaimed
from ansflow.engine.scheduler import Scheduler
from ansflow.errors import Conflict
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
    executions that this one lets go on (a freed concurrency group)."""

    def __init__(self, resources: Resources, listeners: list[Listener] | None = None,
                 waker: Waker | None = None, steps: StepQueue | None = None) -> None:
        """``steps``: this worker's side of the step queue, through which steps may run on
        other workers (``placement.py``); None runs every step here."""
        self.resources = resources
        self.listeners = listeners or []
        self.waker = waker
        self.steps = steps

    async def execute(self, execution_id: int) -> ExecutionResult:
        # a second delivery (a wake-up, a sweeper's re-dispatch) of an execution this
        # process runs would otherwise claim it again under the same worker id
        if execution_id in self.resources.running:
            logger.info("execution %s: already running in this process", execution_id)
            return ExecutionResult(execution_id, ExecutionStatus.RUNNING, False)
        self.resources.running.add(execution_id)
        try:
            return await self._execute(execution_id)
        finally:
            self.resources.running.discard(execution_id)

    async def _execute(self, execution_id: int) -> ExecutionResult:
        claim = await DbRecorder.claim(self.resources, execution_id, self.listeners)
        await wake(self.waker, claim.wake, event_key("entered", str(execution_id)))
        if isinstance(claim, NotClaimed):
            logger.info("execution %s: not claimed (status %s, held by %s)",
                        execution_id, claim.status, claim.holder)
            return ExecutionResult(execution_id, claim.status, False)
        scheduler = Scheduler(claim.recorder, claim.state, claim.options,
                              self.resources.settings, self.resources.store,
                              StepGroups(claim.recorder, self.waker), self.steps)
        status = await scheduler.run()
        if claim.group is not None and status.terminal and not claim.recorder.lease_lost:
            waiter = await claim.recorder.leave_group(claim.group, None)
            if waiter is not None:
                await wake(self.waker, [waiter], event_key("released", claim.group))
        return ExecutionResult(execution_id, status, True)

    async def run_step(self, execution_id: int, step_name: str) -> StepStatus:
        """Run one step of the execution under its lease, for callers that decide the
        order of steps themselves (``SyncStepExecutor``): conditions are the caller's
        business; attempts, retries, timeouts, the heartbeat and recording are not."""
        claim = await DbRecorder.claim(self.resources, execution_id, self.listeners)
        if isinstance(claim, NotClaimed):
            raise Conflict(f"execution {execution_id} is held by another worker")
        step = claim.state.steps.get(step_name)
        if step is None or step.status.terminal:
            await claim.recorder.close()
            if step is None:
                raise Conflict(f"execution {execution_id} has no step named {step_name!r}")
            return step.status
        claim.state.workspace.mkdir(parents=True, exist_ok=True)
        scheduler = Scheduler(claim.recorder, claim.state, claim.options,
                              self.resources.settings, self.resources.store,
                              StepGroups(claim.recorder, None))
        return await scheduler.run_one(step)


__all__ = ["ExecutionResult", "PipelineExecutor", "StepStatus"]
