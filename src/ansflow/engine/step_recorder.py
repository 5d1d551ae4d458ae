"""The storage adapter of a worker that runs one step of an execution another worker
holds: claim the handed-over step, load what it needs, and record it under the step's
lease (``db/dispatch.py``) instead of the execution's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from ansflow.db import dispatch, writes
from ansflow.db.store import Store
from ansflow.engine.placement import HandOver
from ansflow.engine.recorder import DbRecorder, load_execution
from ansflow.engine.runtime import ExecutionState, StepRuntime
from ansflow.engine.writer import Fence
from ansflow.errors import map_errors
from ansflow.resources import Resources

logger = logging.getLogger(__name__)
CACHED_EXECUTIONS = 32
# a notify step reports on every step so far; other steps read only their ancestors
READS_EVERY_STEP = frozenset({"notify"})


class StepRecorder(DbRecorder):
    """Every write renews this worker's lease on the step and fails with ``LeaseLost``
    once the execution's holder took the step back (it cleared the row's worker)."""

    def __init__(self, resources: Resources, handover: HandOver) -> None:
        self.step_execution_id = handover.step_execution_id
        super().__init__(resources.db, handover.execution_id, resources.worker_id,
                         resources.settings.lease_seconds, None, resources.bus)

    def _fence(self, worker_id: str, lease_seconds: float) -> Fence:
        return lambda conn, bump: writes.step_fence(
            conn, self.execution_id, self.step_execution_id, worker_id, lease_seconds, bump)

    async def stop_request(self) -> str | None:
        """Renew the step's lease; the status to stop with, when the step must stop."""
        return await self._writer.write(  # type: ignore[no-any-return]
            lambda c: dispatch.stop_request(c, self.execution_id, self.step_execution_id))


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
            names = (list(state.steps) if step.type in READS_EVERY_STEP
                     else [step.name, *state.ancestors(step)])
            async with resources.db.engine.connect() as conn:
                rows = await dispatch.step_states(conn, [state.steps[n].row_id for n in names])
        for name in names:
            state.steps[name].update_from(rows[state.steps[name].row_id])
        step.stop_status = None
        return ClaimedStep(StepRecorder(resources, handover), state, step)

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
            self._states.popitem(last=False)
        return state

