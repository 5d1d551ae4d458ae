"""Approve or reject a waiting approval step; the execution resumes at once."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path

from ansflow.api.auth import TRIGGER, Principal
from ansflow.api.deps import (
    AUTH_ERRORS,
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    DispatcherDep,
    ExecutionDep,
    StoreDep,
)
from ansflow.api.schemas import DecisionCreate, ExecutionPublic
from ansflow.api.views import execution_record
from ansflow.db.audit import Actor, audit
from ansflow.db.models import PipelineExecution
from ansflow.db.parking import decide
from ansflow.db.store import Store
from ansflow.errors import InfrastructureError
from ansflow.queue.dispatch import Dispatcher

logger = logging.getLogger(__name__)
router = APIRouter(tags=["executions"], responses={**ERRORS, **AUTH_ERRORS})
StepName = Annotated[str, Path(description="The approval step's name", max_length=64)]
Caller = Annotated[Principal, TRIGGER]
"""First among a route's parameters: the caller is known before anything is read for it
(and the request's session, the one connection of an embedded SQLite, is not yet held
while authentication reads the tokens)."""


@router.post("/executions/{execution_id}/steps/{step}/approve", response_model=ExecutionPublic,
             responses=NOT_FOUND | CONFLICT)
async def approve_step(caller: Caller, execution: ExecutionDep, step: StepName,
                       store: StoreDep, dispatcher: DispatcherDep,
                       body: DecisionCreate | None = None) -> ExecutionPublic:
    """Approve a ``waiting`` approval step: it succeeds and the steps after it start.
    Only tokens named in the step's ``approvers`` may decide (any token with the trigger
    scope when it names none): 403 otherwise; 409 when the step is not waiting."""
    return await _decide(execution, step, caller, store, dispatcher, True, body)


@router.post("/executions/{execution_id}/steps/{step}/reject", response_model=ExecutionPublic,
             responses=NOT_FOUND | CONFLICT)
async def reject_step(caller: Caller, execution: ExecutionDep, step: StepName,
                      store: StoreDep, dispatcher: DispatcherDep,
                      body: DecisionCreate | None = None) -> ExecutionPublic:
    """Reject a ``waiting`` approval step: it fails (``error_code`` ``rejected``), with
    the same rules as approve."""
    return await _decide(execution, step, caller, store, dispatcher, False, body)


async def _decide(execution: PipelineExecution, step: str, caller: Principal, store: Store,
                  dispatcher: Dispatcher, approved: bool, body: DecisionCreate | None
                  ) -> ExecutionPublic:
    comment = body.comment if body else None
    try:
        row = await decide(store.session, execution.id, step, approved=approved,
                           by=caller.name, approvers_only=True, comment=comment)
        audit(store.session, Actor.token(caller.name, caller.token_id),
              "step.approve" if approved else "step.reject", "step", row.id,
              execution_id=execution.id, step=step, comment=comment)
    finally:
        await store.commit()  # a timed-out approval still records the wake-up
    try:
        await dispatcher.dispatch(execution.id, wake=f"step:{row.id}")
    except InfrastructureError as exc:
        # the decision is stored and the execution marked due: the sweeper wakes it
        logger.warning("execution %s: %s; the sweeper will resume it", execution.id,
                       exc.message)
    await store.session.refresh(execution)
    return await execution_record(store, execution)
