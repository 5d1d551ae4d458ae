"""Concurrency groups for the engine: an execution's own group, taken when it is claimed
(``DbRecorder.claim``), and its steps' groups, taken when a step is about to start. The
database arbitrates (``db/groups.py``, reached through the ``Recorder``).

A member that lets a group go wakes the one waiting for it through the ``Waker`` (the
dispatcher of the process, so a worker anywhere resumes it at once); without one, the
waiter is due in the database and the sweeper, or ``ansflow run``, resumes it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from ansflow.engine.recorder import Recorder
from ansflow.engine.runtime import StepRuntime
from ansflow.errors import InfrastructureError
from ansflow.spec import expr
from ansflow.spec.concurrency import Entry, group_name

logger = logging.getLogger(__name__)

Waker = Callable[[int, str], Awaitable[None]]
"""Dispatches a parked execution (by id) again; the string names the waking event, so
each event is queued once."""


def event_key(what: str, group: str) -> str:
    """A wake-up's job key: one per event (the group's name is hashed: it is user text)."""
    digest = hashlib.sha256(group.encode()).hexdigest()[:16]
    return f"{what}:{digest}:{time.time_ns()}"


async def wake(waker: Waker | None, execution_ids: Iterable[int], key: str) -> None:
    if waker is None:
        return
    for execution_id in execution_ids:
        try:
            await waker(execution_id, key)
        except InfrastructureError as exc:  # it is due in the database: the sweeper wakes it
            logger.warning("execution %s: could not be woken (%s)", execution_id,
                           exc.message)


class StepGroups:
    """The groups held and waited for by the steps of one execution."""

    def __init__(self, recorder: Recorder, waker: Waker | None) -> None:
        self.recorder = recorder
        self.waker = waker
        self.held: dict[str, tuple[str, StepRuntime]] = {}
        self.blocked: dict[str, tuple[str, StepRuntime]] = {}

    def __bool__(self) -> bool:
        return bool(self.blocked)

    @property
    def held_ids(self) -> list[int]:
        return [step.row_id for _, step in self.held.values()]

    async def enter(self, step: StepRuntime, ctx: expr.EvalContext
                    ) -> tuple[str, Entry] | None:
        """Take the step's group, or wait for it (``blocked``), or learn that a newer
        step superseded it: the group's name and the outcome. None when the step has no
        group."""
        spec = step.concurrency
        if not spec:
            return None
        name = group_name(spec["group"], ctx)
        if name is None:
            return None
        entry = await self.recorder.enter_group(
            name, step.row_id, cancel_in_progress=bool(spec.get("cancel_in_progress")))
        await wake(self.waker, entry.wake, event_key("entered", name))
        self.blocked.pop(step.name, None)
        if entry.outcome == "hold":
            self.held[step.name] = (name, step)
        elif entry.outcome == "wait":
            self.blocked[step.name] = (name, step)
        return name, entry

    async def leave(self, step: StepRuntime) -> None:
        """Let the step's group go (the step ended) and wake whoever waits for it."""
        held = self.held.pop(step.name, None)
        self.blocked.pop(step.name, None)
        if held is None:
            return
        name = held[0]
        waiter = await self.recorder.leave_group(name, step.row_id)
        if waiter is not None:
            await wake(self.waker, [waiter], event_key("released", name))
