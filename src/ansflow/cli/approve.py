"""``ansflow approve EXECUTION STEP``: decide a waiting approval step from a terminal.

Whoever runs it can reach the database, which makes them an administrator: the step's
``approvers`` (token names) do not apply, and the decision is recorded as
``cli:<user>``. The execution is woken at once: an ``ansflow run`` waiting for it (or
an API's sweeper) picks it up; with a queue (arq, Celery) it is dispatched right away.
"""

from __future__ import annotations

import getpass

from ansflow.config import Settings
from ansflow.db.audit import Actor, audit
from ansflow.db.parking import decide
from ansflow.queue.dispatch import open_dispatcher
from ansflow.resources import Resources


async def decide_step(settings: Settings, execution_id: int, step: str, *, approved: bool,
                      comment: str | None) -> str:
    """Record the decision; returns who it was recorded as."""
    who = f"cli:{_user()}"
    async with Resources.open(settings) as resources:
        async with resources.db.session() as session:
            row = await decide(session, execution_id, step, approved=approved, by=who,
                               approvers_only=False, comment=comment)
            audit(session, Actor.cli(), "step.approve" if approved else "step.reject", "step",
                  row.id, execution_id=execution_id, step=step, comment=comment)
            await session.commit()
        if settings.backend != "inprocess":  # in-process: the process running it polls
            async with open_dispatcher(settings, resources) as dispatcher:
                await dispatcher.dispatch(execution_id, wake=f"step:{row.id}")
    return who


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
