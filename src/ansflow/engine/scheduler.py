"""The scheduling loop of one execution: ready steps → tasks → completions → finalize."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from datetime import datetime

from ansflow.config import Settings
from ansflow.engine import metrics
from ansflow.engine.files import StepFiles
from ansflow.engine.finalize import final_status, note_resume, ready_time, summary
from ansflow.engine.loader import ExecutionOptions
from ansflow.engine.placement import Placer, StepQueue
from ansflow.engine.recorder import Recorder
from ansflow.engine.runtime import ExecutionState, StepRuntime, interrupt_attempt
from ansflow.engine.step_executor import StepExecutor
from ansflow.errors import AnsFlowError, ExpressionError, LeaseLost
from ansflow.spec import expr
from ansflow.spec.graph import Dag, Plan
from ansflow.status import ExecutionStatus, StepStatus, utcnow
from ansflow.workspace.store import WorkspaceStore

logger = logging.getLogger(__name__)
RUNS_ON_CANCEL = frozenset({"always", "cancelled"})


class Scheduler:
    """Runs one claimed execution to a terminal status. Not reusable."""

    def __init__(self, recorder: Recorder, state: ExecutionState, options: ExecutionOptions,
                 settings: Settings, store: WorkspaceStore, steps: StepQueue | None = None
                 ) -> None:
        self.recorder = recorder
        self.state = state
        self.options = options
        self.settings = settings
        self.steps = state.steps
        dag = Dag({s.name: s.depends_on for s in self.steps.values()},
                  order={s.name: s.order for s in self.steps.values()})
        self.dag = dag
        self.plan = Plan(dag, completed=[s.name for s in self.steps.values() if s.status.terminal])
        self.files = StepFiles(store, recorder, state)
        self.step_executor = StepExecutor.for_settings(recorder, state, self.files, settings)
        # with a step queue (arq workers), steps may run on other workers (placement.py)
        self.placer = (Placer(steps, recorder, state, settings, self.step_executor.run)
                       if steps is not None else None)
        self.running: dict[asyncio.Task[StepStatus], StepRuntime] = {}
        self.wakeup = asyncio.Event()
        self.cancel_requested = False
        self.error: str | None = None

    async def run(self) -> ExecutionStatus:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._start()
            await self._loop()
        except LeaseLost:
            logger.warning("execution %s: lease lost, stopping here", self.state.id)
            await self._stop(StepStatus.CANCELLED)
            return ExecutionStatus.ERROR
        except asyncio.CancelledError:
            # worker shutdown or job abort: hand the execution back, resumable elsewhere
            await asyncio.shield(self._hand_back())
            raise
        except AnsFlowError as exc:
            self.error = exc.message
            logger.error("execution %s: %s", self.state.id, exc.message)
            await self._stop(StepStatus.CANCELLED)
        except Exception as exc:
            self.error = f"internal error: {exc!r}"
            logger.exception("execution %s: scheduler crashed", self.state.id)
            await self._stop(StepStatus.CANCELLED)
            await asyncio.shield(self._finalize())
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await asyncio.shield(self.files.close())
            if self.placer is not None:
                await self.placer.close()
        try:
            return await asyncio.shield(self._finalize())
        finally:
            await self.recorder.close()

    async def run_one(self, step: StepRuntime) -> StepStatus:
        """Run only ``step`` (``SyncStepExecutor``) under the same heartbeat: a cancel
        request or a lost lease stops it as it would stop the whole execution."""
        heartbeat = asyncio.create_task(self._heartbeat())
        task = asyncio.create_task(self.step_executor.run(step), name=step.name)
        self.running[task] = step
        try:
            while not task.done():
                waiter = asyncio.create_task(self.wakeup.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if self.wakeup.is_set():
                    await self._stop(StepStatus.CANCELLED)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(StepStatus.CANCELLED))
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self.recorder.close()
        if self.recorder.lease_lost:
            raise LeaseLost(f"execution {self.state.id} is now held by another worker")
        return step.status if task.cancelled() else task.result()

    async def _hand_back(self) -> None:
        await self._stop(StepStatus.PENDING)
        if not self.recorder.lease_lost:
            await self.recorder.release()

    async def _start(self) -> None:
        now = utcnow()
        crashed_at = note_resume(self.state, now)
        self.state.started_at = self.state.started_at or now
        self.state.meta["max_parallel"] = self.options.max_parallel
        await self._prepare_workspace()
        await self.recorder.execution_changed(status=ExecutionStatus.RUNNING,
                                              started_at=self.state.started_at,
                                              meta=dict(self.state.meta))
        for step in self.steps.values():
            if step.status in (StepStatus.RUNNING, StepStatus.RETRYING) and not (
                    self.placer is not None and self.placer.adoptable(step)):
                await self._interrupted(step, crashed_at or now)

    async def _prepare_workspace(self) -> None:
        workspace, original = self.state.workspace, self.options.reuse_workspace_of
        if not workspace.exists() and original is not None and original.is_dir():
            await asyncio.to_thread(shutil.copytree, original, workspace, symlinks=True)
        workspace.mkdir(parents=True, exist_ok=True)

    async def _interrupted(self, step: StepRuntime, crashed_at: datetime) -> None:
        """A step that was running when its worker died: its attempt ended with the
        worker's last heartbeat; record that and run the step again."""
        interrupt_attempt(step.attempts, crashed_at)
        step.status = StepStatus.PENDING
        await self.recorder.step_changed(step.row_id, step.name, status=StepStatus.PENDING,
                                         attempts=list(step.attempts))

    async def _loop(self) -> None:
        deadline = (time.monotonic() + self.options.timeout - self._elapsed()
                    if self.options.timeout else None)
        while True:
            await self._fill()
            if not self.running:
                return
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            waiter = asyncio.create_task(self.wakeup.wait())
            await asyncio.wait({*self.running, waiter}, timeout=remaining,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for task in [t for t in self.running if t.done()]:
                if task in self.running:  # a fail-fast stop of an earlier one took it
                    await self._completed(task)
            if deadline is not None and time.monotonic() >= deadline:
                await self._stop(StepStatus.TIMED_OUT)
            elif self.wakeup.is_set():
                self.wakeup.clear()
                await self._stop(StepStatus.CANCELLED)

    def _elapsed(self) -> float:
        started = self.state.started_at
        return 0.0 if started is None else max((utcnow() - started).total_seconds(), 0.0)

    async def _fill(self) -> None:
        while len(self.running) < self.options.max_parallel:
            names = self.plan.take_ready(1)
            if not names:
                return
            step = self.steps[names[0]]
            step.ready_at = step.ready_at or ready_time(self.state, step)
            decision = await self._decide(step)
            if decision is None:
                run = self.placer.run if self.placer is not None else self.step_executor.run
                task = asyncio.create_task(run(step), name=step.name)
                self.running[task] = step
            else:
                await self._settle(step, decision)

    async def _decide(self, step: StepRuntime) -> StepStatus | None:
        """None to run the step, else the status it ends with without running."""
        if self.state.stopping == StepStatus.TIMED_OUT:
            return StepStatus.CANCELLED
        if (self.state.stopping is not None
                and not step.condition.status_functions & RUNS_ON_CANCEL):
            return StepStatus.CANCELLED
        try:
            run = expr.truthy(step.condition.evaluate(self.state.eval_context(step)))
        except ExpressionError as exc:
            step.attempts.append({"number": 0, "status": "failed", "error": exc.message})
            await self._settle(step, StepStatus.FAILED, error=f"when: {exc.message}")
            return StepStatus.FAILED
        return None if run else StepStatus.SKIPPED

    async def _settle(self, step: StepRuntime, status: StepStatus, error: str | None = None
                      ) -> None:
        """End a step that did not run (skipped, cancelled, or a broken condition)."""
        if not step.status.terminal:
            step.status = status
            step.completed_at = utcnow()
            await self.recorder.step_changed(step.row_id, step.name, status=status, wait=False,
                                             ready_at=step.ready_at, error=error,
                                             completed_at=step.completed_at,
                                             attempts=list(step.attempts))
        self._release(step)

    def _release(self, step: StepRuntime) -> None:
        self.plan.complete(step.name)

    async def _completed(self, task: asyncio.Task[StepStatus]) -> None:
        step = self.running.pop(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
        if step.broken and self.options.fail_fast and self.state.stopping is None:
            await self._stop(StepStatus.CANCELLED)
        self._release(step)

    async def _stop(self, status: StepStatus) -> None:
        """Cancel every running step; each records ``status`` (``pending`` = handed back,
        the attempt marked interrupted). Pending steps are decided by ``_decide``."""
        if status == StepStatus.TIMED_OUT or self.state.stopping is None:
            self.state.stopping = status
        tasks = dict(self.running)
        self.running.clear()
        for task, step in tasks.items():
            step.stop_status = status
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for step, result in zip(tasks.values(), results, strict=True):
            if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError | LeaseLost):
                logger.error("execution %s step %s: %r", self.state.id, step.name, result)
            if step.status.terminal:
                self._release(step)

    async def _heartbeat(self) -> None:
        interval = self.settings.heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.recorder.heartbeat() and not self.cancel_requested:
                    self.cancel_requested = True
                    self.wakeup.set()
            except LeaseLost:
                self.wakeup.set()
                return
            except AnsFlowError as exc:
                logger.warning("execution %s: heartbeat failed: %s", self.state.id, exc.message)

    async def _finalize(self) -> ExecutionStatus:
        if self.recorder.lease_lost:
            return ExecutionStatus.ERROR
        for step in self.steps.values():
            if not step.status.terminal:
                await self._settle(step, StepStatus.CANCELLED)
        status = final_status(self.state, self.cancel_requested, self.error)
        completed_at = utcnow()
        recorded = await self.recorder.execution_finished(
            status, self.error, completed_at=completed_at, meta=summary(self.state))
        metrics.execution_ended(recorded, self.state.started_at, completed_at)
        return recorded
