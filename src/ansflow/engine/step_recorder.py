"""The storage adapter of a worker that runs one step of an execution another worker
holds: claim the handed-over step, load what it needs, and record it under the step's
lease (``db/dispatch.py``) instead of the execution's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.db import artifacts, dispatch, writes
from ansflow.db.batch import LogAppend, Statement, StepChange, Write
from ansflow.db.store import Store
from ansflow.engine.placement import HandOver
from ansflow.engine.recorder import DbRecorder, load_execution
from ansflow.engine.runtime import ExecutionState, StepRuntime
from ansflow.engine.writer import BatchWriter
from ansflow.errors import LeaseLost, map_errors
from ansflow.resources import Resources

logger = logging.getLogger(__name__)
CACHED_EXECUTIONS = 32
# a notify step reports on every step so far; other steps read only their ancestors
READS_EVERY_STEP = frozenset({"notify"})


@dataclass(frozen=True, slots=True)
class StepStatement:
    """A statement that belongs to one step (fenced by that step's lease)."""

    step_execution_id: int
    run: Statement

    async def __call__(self, conn: AsyncConnection) -> Any:
        return await self.run(conn)


def _step_ids(batch: list[Write]) -> list[int]:
    return sorted({w.step_execution_id for w in batch
                   if isinstance(w, StepChange | LogAppend | StepStatement)})


class StepRecorder(DbRecorder):
    """Records one handed-over step. The writer is shared by the steps of its execution
    that run on this worker (their writes commit together, as a holder's do); each write
    is fenced by its own step's lease, and fails with ``LeaseLost`` once the execution's
    holder took that step back (it cleared the row's worker)."""

    def __init__(self, resources: Resources, handover: HandOver, writer: BatchWriter) -> None:
        self.step_execution_id = handover.step_execution_id
        self._lost = False
        super().__init__(resources.db, handover.execution_id, resources.worker_id,
                         resources.settings.lease_seconds, None, resources.bus, writer)

    @property
    def lease_lost(self) -> bool:
        return self._lost

    def _submit(self, write: Write) -> asyncio.Future[Any]:
        if self._lost:
            raise LeaseLost(f"step {self.step_execution_id}: taken back by its holder")
        future = self._writer.submit(write)
        future.add_done_callback(self._check_lease)
        return future

    def _check_lease(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and isinstance(future.exception(), LeaseLost):
            self._lost = True

    async def artifacts_kept(self, step: str, rows: list[dict[str, Any]]) -> None:
        await asyncio.shield(self._submit(StepStatement(
            self.step_execution_id,
            lambda c: artifacts.replace_artifacts(c, self.execution_id, step, rows))))

    async def stop_request(self) -> str | None:
        """Renew the step's lease; the status to stop with, when the step must stop."""
        return await asyncio.shield(self._submit(StepStatement(
            self.step_execution_id,
            lambda c: dispatch.stop_request(c, self.execution_id, self.step_execution_id))))


@dataclass(frozen=True, slots=True)
class ClaimedStep:
    recorder: StepRecorder
    state: ExecutionState
    step: StepRuntime


class Executions:
    """The executions this worker ran handed-over steps of, loaded once each (steps,
    secrets); a claim reads again only the rows that change: the step's own and its
    ancestors' (every step's for a ``notify`` step)."""

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self._states: OrderedDict[int, ExecutionState] = OrderedDict()
        self._writers: dict[int, BatchWriter] = {}
        self.running: dict[int, set[str]] = {}
        """The steps of each execution that run on this worker now."""

    async def claim(self, handover: HandOver) -> ClaimedStep | None:
        """The step, claimed for this worker; None when the hand-over is stale (another
        worker took it, it was handed over again, or the execution stops)."""
        resources = self.resources
        with map_errors(f"claiming step {handover.step!r} of execution "
                        f"{handover.execution_id}"):
            async with resources.db.engine.begin() as conn:
                if not await dispatch.claim_step(conn, handover.execution_id,
                                                 handover.step_execution_id, handover.token,
                                                 resources.worker_id,
                                                 resources.settings.lease_seconds):
                    return None
            state = await self._state(handover.execution_id)
            step = state.steps[handover.step]
            # not the steps running here: their executors own their state
            busy = self.running.setdefault(handover.execution_id, set())
            names = [n for n in (list(state.steps) if step.type in READS_EVERY_STEP
                                 else [step.name, *state.ancestors(step)])
                     if n == step.name or n not in busy]
            async with resources.db.engine.connect() as conn:
                rows = await dispatch.step_states(conn, [state.steps[n].row_id for n in names])
        for name in names:
            state.steps[name].update_from(rows[state.steps[name].row_id])
        step.stop_status = None
        return ClaimedStep(StepRecorder(resources, handover, self._writer(handover)), state,
                           step)

    def _writer(self, handover: HandOver) -> BatchWriter:
        """The execution's writer on this worker (made with its state, dropped with it)."""
        execution_id = handover.execution_id
        writer = self._writers.get(execution_id)
        if writer is None:
            settings, worker = self.resources.settings, self.resources.worker_id
            writer = self._writers[execution_id] = BatchWriter(
                self.resources.db, execution_id, worker, settings.lease_seconds,
                self.resources.bus.publish, per_write=True,
                fence=lambda conn, bump, batch: writes.step_fence(
                    conn, execution_id, _step_ids(batch), worker, settings.lease_seconds,
                    bump))
        return writer

    async def _state(self, execution_id: int) -> ExecutionState:
        state = self._states.get(execution_id)
        if state is not None:
            self._states.move_to_end(execution_id)
            return state
        async with self.resources.db.session() as session:
            execution = await Store(session).get_execution(execution_id)
            state, _ = await load_execution(session, execution, self.resources.settings)
        state.worker_id = self.resources.worker_id
        self._states[execution_id] = state
        while len(self._states) > CACHED_EXECUTIONS:
            dropped, _ = self._states.popitem(last=False)
            self._writers.pop(dropped, None)  # idle by now; its task ended with its queue
        return state

