"""Run a step handed over by another worker's scheduler (``placement.py``).

The step runs as it would on its holder (``StepExecutor``: attempts, retries, its own
timeout, logs): its workspace is this host's, so it first restores what its dependencies
left from the workspace store, and saves what it changed after it succeeds. Every
heartbeat renews the step's lease and asks whether it must stop (a cancel, fail-fast,
the execution's timeout): then its processes are killed and the status recorded. A lease
taken back (the holder thought this worker lost) kills them without recording anything.
A worker that stops hands the step back (its attempt ``interrupted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ansflow.engine.files import StepFiles
from ansflow.engine.placement import HandOver
from ansflow.engine.runtime import StepRuntime
from ansflow.engine.step_executor import StepExecutor
from ansflow.engine.step_recorder import ClaimedStep, Executions
from ansflow.errors import AnsFlowError, LeaseLost
from ansflow.resources import Resources
from ansflow.status import StepStatus

logger = logging.getLogger(__name__)


class HandedSteps:
    """One per worker: runs the hand-overs it pops, concurrently."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.executions = Executions(resources)

    async def run(self, handover: HandOver, ended: Callable[[], None] = lambda: None
                  ) -> StepStatus | None:
        """Run the step to its end; None when the hand-over was stale. ``ended`` is called
        once the step's processes are gone (its last writes may still be committing)."""
        claimed = await self.executions.claim(handover)
        if claimed is None:
            logger.info("execution %s step %s: hand-over %s is stale", handover.execution_id,
                        handover.step, handover.token)
            return None
        logger.info("execution %s step %s: running here for its holder",
                    handover.execution_id, handover.step)
        files = StepFiles(self.resources.store, claimed.recorder, claimed.state)
        running = self.executions.running.setdefault(handover.execution_id, set())
        running.add(handover.step)
        try:
            await asyncio.to_thread(claimed.state.workspace.mkdir, parents=True, exist_ok=True)
            executor = StepExecutor.for_settings(claimed.recorder, claimed.state, files,
                                                 self.resources.settings)
            status = await self._supervise(claimed, asyncio.create_task(
                executor.run(claimed.step), name=f"handed-{handover.step}"))
            ended()
            return status
        finally:
            running.discard(handover.step)
            if not running:
                self.executions.running.pop(handover.execution_id, None)
            await asyncio.shield(files.close())
            await claimed.recorder.close()

    async def _supervise(self, claimed: ClaimedStep, task: asyncio.Task[StepStatus]
                         ) -> StepStatus:
        step, recorder = claimed.step, claimed.recorder
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.resources.settings.heartbeat_seconds)
                if task.done():
                    break
                try:
                    stop = await recorder.stop_request()
                except LeaseLost:
                    logger.warning("execution %s step %s: taken back by its holder; "
                                   "stopping it", claimed.state.id, step.name)
                    stop = StepStatus.CANCELLED.value
                except AnsFlowError as exc:
                    logger.warning("execution %s step %s: heartbeat failed: %s",
                                   claimed.state.id, step.name, exc.message)
                    continue
                if stop is not None:
                    await _stop(task, step, StepStatus(stop))
        except asyncio.CancelledError:
            # this worker stops: the step goes back to its holder, resumable elsewhere
            await asyncio.shield(self._hand_back(claimed, task))
            raise
        return step.status if task.cancelled() else task.result()


    async def _hand_back(self, claimed: ClaimedStep, task: asyncio.Task[StepStatus]) -> None:
        await _stop(task, claimed.step, StepStatus.PENDING)
        if not claimed.recorder.lease_lost and claimed.step.status == StepStatus.PENDING:
            with contextlib.suppress(AnsFlowError):  # no lease: its holder hands it over
                await claimed.recorder.step_changed(claimed.step.row_id, claimed.step.name,
                                                    lease_expires_at=None)


async def _stop(task: asyncio.Task[StepStatus], step: StepRuntime, status: StepStatus
                ) -> None:
    step.stop_status = status
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, LeaseLost):
        await task
