"""Concurrency groups for the engine: an execution's own group, taken when it is claimed,
and its steps' groups, taken when a step is about to start (``db/groups.py`` arbitrates).

A member that lets a group go wakes the one waiting for it through the ``Waker`` (the
dispatcher of the process, so a worker anywhere resumes it at once); without one, the
waiter is due in the database and the sweeper, or ``ansflow run``, resumes it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from ansflow.db import groups
from ansflow.db.database import Database
from ansflow.db.groups import Entry
from ansflow.engine.runtime import StepRuntime, trigger_context
from ansflow.errors import InfrastructureError
from ansflow.spec import expr

logger = logging.getLogger(__name__)
MAX_NAME = 255
RECHECK = timedelta(seconds=60)
"""A waiting member looks again this often, should the wake-up of a release be lost."""


Waker = Callable[[int, str], Awaitable[None]]
"""Dispatches a parked execution (by id) again; the string names the waking event, so
each event is queued once."""


def group_name(template: str, ctx: expr.EvalContext) -> str | None:
    """The rendered group name (None when it renders empty: no group); a name too long
    for the table keeps its head and a digest of the whole."""
    name = expr.render(template, ctx).strip()
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[:MAX_NAME - 13]}-{digest}"
    return name or None


def execution_group(options: Mapping[str, Any], trigger: Mapping[str, Any]
                    ) -> tuple[str, bool] | None:
    """The execution's own group and its ``cancel_in_progress``, if it has one."""
    spec = options.get("concurrency")
    if not spec:
        return None
    ctx = expr.EvalContext(trigger=trigger_context(trigger), env=options.get("env") or {},
                           vars=dict(trigger.get("variables") or {}))
    name = group_name(spec["group"], ctx)
    return None if name is None else (name, bool(spec.get("cancel_in_progress")))


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

    def __init__(self, db: Database, execution_id: int, waker: Waker | None) -> None:
        self.db = db
        self.execution_id = execution_id
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
        me = (self.execution_id, step.row_id)
        preempt = bool(spec.get("cancel_in_progress"))
        entry = await groups.transaction(self.db, lambda conn: groups.enter(
            conn, name, me, cancel_in_progress=preempt), f"entering concurrency group {name!r}")
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
        waiter = await groups.transaction(
            self.db, lambda conn: groups.leave(conn, name, (self.execution_id, step.row_id)),
            f"leaving concurrency group {name!r}")
        if waiter is not None:
            await wake(self.waker, [waiter], event_key("released", name))
