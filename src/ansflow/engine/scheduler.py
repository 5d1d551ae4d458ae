"""The scheduling loop of one execution: ready steps → tasks → completions → finalize."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from ansflow.config import Settings
from ansflow.engine import metrics
from ansflow.engine.commit_status import CommitStatusReporter
from ansflow.engine.concurrency import StepGroups
from ansflow.engine.files import StepFiles
from ansflow.engine.finalize import final_status, note_resume, ready_time, summary
from ansflow.engine.gates import Gates
from ansflow.engine.loader import ExecutionOptions
from ansflow.engine.placement import Placer, StepQueue
from ansflow.engine.recorder import Recorder
from ansflow.engine.runtime import ExecutionState, StepRuntime, interrupt_attempt
from ansflow.engine.step_executor import StepExecutor
from ansflow.errors import AnsFlowError, ExpressionError, LeaseLost
from ansflow.spec import expr
from ansflow.spec.concurrency import RECHECK, superseded_reason
from ansflow.spec.graph import Dag, Plan
from ansflow.status import ExecutionStatus, StepStatus, utcnow
from ansflow.steps.base import get_step_type
from ansflow.trust.targets import Guard
from ansflow.workspace.store import WorkspaceStore

logger = logging.getLogger(__name__)
RUNS_ON_CANCEL = frozenset({"always", "cancelled"})
GATE_POLL_SECONDS = 0.25
"""How often a worker that holds an execution looks for decisions on its waiting steps
(a parked execution is woken by the decision itself)."""


class Scheduler:
    """Runs one claimed execution to a terminal status. Not reusable."""

    def __init__(self, recorder: Recorder, state: ExecutionState, options: ExecutionOptions,
                 settings: Settings, store: WorkspaceStore, groups: StepGroups,
                 steps: StepQueue | None = None) -> None:
        self.recorder = recorder
        self.groups = groups
        self.state = state
        self.options = options
        self.settings = settings
        self.steps = state.steps
        dag = Dag({s.name: s.depends_on for s in self.steps.values()},
                  order={s.name: s.order for s in self.steps.values()})
        self.dag = dag
        self.gates = Gates(recorder, state)
        self.plan = Plan(dag, completed=[s.name for s in self.steps.values() if s.status.terminal],
                         started=list(self.gates.waiting))
        self.files = StepFiles(store, recorder, state)
        self.step_executor = StepExecutor.for_settings(recorder, state, self.files, settings)
        # with a step queue (arq workers), steps may run on other workers (placement.py)
        self.placer = (Placer(steps, recorder, state, settings, self.step_executor.run)
                       if steps is not None else None)
        self.running: dict[asyncio.Task[StepStatus], StepRuntime] = {}
        self.matrix_running: Counter[str] = Counter()
        self.failed_matrices: dict[str, str] = {}
        """Matrix steps stopped by ``fail_fast``: the instance that failed, by matrix."""
        self.wakeup = asyncio.Event()
        self.recheck_groups = False
        self.preempted: dict[int, str] = {}
        self.cancel_requested = options.cancel_requested
        self.reporter = CommitStatusReporter(state, options.report_status, settings.public_url,
                                             Guard(deny_private=settings.notify_deny_private))
        self.error: str | None = None

    async def run(self) -> ExecutionStatus:
        heartbeat = asyncio.create_task(self._heartbeat())
        parked = False
        try:
            await self._start()
            parked = await self._loop()
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
        if parked:
            logger.info("execution %s: parked until its waiting steps are decided",
                        self.state.id)
            await self.recorder.close()
            await self.reporter.close()
            return ExecutionStatus.RUNNING
        try:
            return await asyncio.shield(self._finalize())
        finally:
            await self.recorder.close()
            await self.reporter.close()

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
        first = self.state.started_at is None
        # a parked execution was let go on purpose: its resume interrupted nothing
        crashed_at = None if self.options.was_parked else note_resume(self.state, now)
        self.state.started_at = self.state.started_at or now
        self.state.meta["max_parallel"] = self.options.max_parallel
        await self._prepare_workspace()
        await self.recorder.execution_changed(status=ExecutionStatus.RUNNING,
                                              started_at=self.state.started_at,
                                              meta=dict(self.state.meta))
        if first:
            self.reporter.post(ExecutionStatus.RUNNING)
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

    async def _loop(self) -> bool:
        """Run until every step ended (False) or only waiting steps are left (True: the
        execution is parked and this worker lets go of it)."""
        deadline = (time.monotonic() + self.options.timeout - self._elapsed()
                    if self.options.timeout else None)
        if self.cancel_requested:
            await self._stop(StepStatus.CANCELLED)
        while True:
            await self._gates_changed()
            await self._groups_changed()
            if deadline is not None and time.monotonic() >= deadline:
                await self._stop(StepStatus.TIMED_OUT)
            await self._fill()
            if not self.running:
                if not self.gates and not self.groups:
                    return False
                if await self._park():
                    return True
                continue
            waiter = asyncio.create_task(self.wakeup.wait())
            await asyncio.wait({*self.running, waiter}, timeout=self._wait_time(deadline),
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            for task in [t for t in self.running if t.done()]:
                if task in self.running:  # a fail-fast stop of an earlier one took it
                    await self._completed(task)
            if self.wakeup.is_set():
                self.wakeup.clear()
                await self._stop_if_asked()

    async def _stop_if_asked(self) -> None:
        """Woken by the heartbeat: a cancel request or a lost lease stops everything."""
        if (self.cancel_requested or self.recorder.lease_lost) and self.state.stopping is None:
            await self._stop(StepStatus.CANCELLED)

    def _wait_time(self, deadline: float | None) -> float | None:
        times = [] if deadline is None else [deadline - time.monotonic()]
        if (gate := self.gates.next_deadline()) is not None:
            times.append((gate - utcnow()).total_seconds())
        return max(min(times), 0.0) if times else None

    async def _gates_changed(self) -> None:
        """Waiting steps decided (found by the heartbeat) or past their deadline."""
        for step in await self.gates.apply() + await self.gates.expire():
            await self._ended(step)

    async def _groups_changed(self) -> None:
        """Steps blocked on a concurrency group try again (the heartbeat asks for it);
        steps holding one that a newcomer preempts are stopped."""
        preempted, self.preempted = self.preempted, {}
        for task, step in list(self.running.items()):
            if step.row_id in preempted:
                await self._cancel({task: step}, StepStatus.CANCELLED, preempted[step.row_id])
        if self.recheck_groups:
            self.recheck_groups = False
            for _, step in list(self.groups.blocked.values()):
                if len(self.running) < self.options.max_parallel:
                    await self._launch(step)

    async def _park(self) -> bool:
        """Let go of the execution until a decision or the next deadline; False when a
        decision came meanwhile (then it is applied and the loop goes on)."""
        times = [self.gates.next_deadline()]
        if self.options.timeout is not None and self.state.started_at is not None:
            times.append(self.state.started_at + timedelta(seconds=self.options.timeout))
        if self.groups:  # a release wakes it; this in case that wake-up is lost
            times.append(utcnow() + RECHECK)
        wake_at = min((t for t in times if t is not None), default=None)
        if await self.recorder.park(self.gates.ids, wake_at):
            return True
        self.gates.found.update((await self.recorder.heartbeat(self.gates.ids)).decided)
        return False

    def _elapsed(self) -> float:
        started = self.state.started_at
        return 0.0 if started is None else max((utcnow() - started).total_seconds(), 0.0)

    async def _fill(self) -> None:
        while len(self.running) < self.options.max_parallel:
            names = self.plan.take_ready(1, self._may_start)
            if not names:
                return
            step = self.steps[names[0]]
            step.ready_at = step.ready_at or ready_time(self.state, step)
            decision = await self._decide(step)
            if decision is None:
                await self._launch(step)
            elif step.matrix_of in self.failed_matrices:
                await self._settle(step, decision, error=self._fail_fast_reason(step))
            else:
                await self._settle(step, decision)

    async def _launch(self, step: StepRuntime) -> None:
        """Start the step, once it holds its concurrency group (if it has one)."""
        entered = (await self.groups.enter(step, self.state.eval_context(step))
                   if step.concurrency else None)
        if entered is not None and entered[1].outcome == "superseded":
            name, entry = entered
            assert entry.other is not None
            await self._settle(step, StepStatus.CANCELLED,
                               error=superseded_reason(entry.other, name))
        elif entered is None or entered[1].outcome == "hold":
            task = asyncio.create_task(self._runner(step)(step), name=step.name)
            self.running[task] = step
            if step.matrix_of is not None:
                self.matrix_running[step.matrix_of] += 1

    def _runner(self, step: StepRuntime
                ) -> Callable[[StepRuntime], Coroutine[Any, Any, StepStatus]]:
        """Where the step runs: here, or through the placer on any worker whose labels
        match (a type that waits on the holder, such as an approval, stays here)."""
        if self.placer is None or not get_step_type(step.type).runs_anywhere:
            return self.step_executor.run
        return self.placer.run

    def _may_start(self, name: str) -> bool:
        """A matrix instance waits while its matrix has ``max_parallel`` instances running."""
        step = self.steps[name]
        limit = step.matrix_max_parallel
        return (limit is None or step.matrix_of is None
                or self.matrix_running[step.matrix_of] < limit)

    def _fail_fast_reason(self, step: StepRuntime) -> str:
        return (f"instance {self.failed_matrices[step.matrix_of or '']!r} of matrix step "
                f"{step.matrix_of!r} failed (fail_fast)")

    async def _decide(self, step: StepRuntime) -> StepStatus | None:
        """None to run the step, else the status it ends with without running."""
        if self.state.stopping == StepStatus.TIMED_OUT:
            return StepStatus.CANCELLED
        if step.matrix_of in self.failed_matrices:
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
        await self._release(step)

    async def _release(self, step: StepRuntime) -> None:
        """A step ended: its dependents may become ready, its concurrency group is free."""
        await self.groups.leave(step)
        self.plan.complete(step.name)

    async def _completed(self, task: asyncio.Task[StepStatus]) -> None:
        step = self._untrack(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
        if step.status == StepStatus.WAITING:
            self.gates.add(step)
            return
        await self._ended(step)

    async def _ended(self, step: StepRuntime) -> None:
        if step.broken and self.options.fail_fast and self.state.stopping is None:
            await self._stop(StepStatus.CANCELLED)
        elif (step.broken and step.matrix_fail_fast and step.matrix_of is not None
              and step.matrix_of not in self.failed_matrices):
            self.failed_matrices[step.matrix_of] = step.name
            await self._cancel({t: s for t, s in self.running.items()
                                if s.matrix_of == step.matrix_of},
                               StepStatus.CANCELLED, self._fail_fast_reason(step))
        await self._release(step)

    def _untrack(self, task: asyncio.Task[StepStatus]) -> StepRuntime:
        step = self.running.pop(task)
        if step.matrix_of is not None:
            self.matrix_running[step.matrix_of] -= 1
        return step

    async def _stop(self, status: StepStatus) -> None:
        """Cancel every running step; each records ``status`` (``pending`` = handed back,
        the attempt marked interrupted). Pending steps are decided by ``_decide``."""
        if status == StepStatus.TIMED_OUT or self.state.stopping is None:
            self.state.stopping = status
        await self._cancel(dict(self.running), status)
        # a hand-back leaves waiting steps waiting; a lost lease leaves them to the holder
        if status != StepStatus.PENDING and not self.recorder.lease_lost:
            for step in await self.gates.stop(status):
                await self._release(step)
            for _, step in list(self.groups.blocked.values()):
                await self._settle(step, StepStatus.CANCELLED)

    async def _cancel(self, tasks: dict[asyncio.Task[StepStatus], StepRuntime],
                      status: StepStatus, reason: str | None = None) -> None:
        for task, step in tasks.items():
            self._untrack(task)
            step.stop_status, step.stop_reason = status, reason
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for step, result in zip(tasks.values(), results, strict=True):
            if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError | LeaseLost):
                logger.error("execution %s step %s: %r", self.state.id, step.name, result)
            if step.status.terminal:
                await self._release(step)

    async def _heartbeat(self) -> None:
        interval = self.settings.heartbeat_seconds
        while True:
            await asyncio.sleep(min(interval, GATE_POLL_SECONDS) if self.gates else interval)
            try:
                beat = await self.recorder.heartbeat(self.gates.ids, self.groups.held_ids)
                self.gates.found.update(beat.decided)
                self.preempted.update(beat.preempted)
                self.recheck_groups = bool(self.groups)
                if beat.decided or beat.preempted or self.recheck_groups:
                    self.wakeup.set()
                if beat.cancel_requested and not self.cancel_requested:
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
        self.reporter.post(recorded)
        return recorded
