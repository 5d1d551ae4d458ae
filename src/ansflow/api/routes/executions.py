"""Executions: start (commit, then dispatch), list, read, step logs by offset, cancel."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from ansflow.api.auth import READ, TRIGGER, ActorDep
from ansflow.api.deps import (
    AUTH_ERRORS,
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    ByteOffsetQuery,
    DispatcherDep,
    ExecutionDep,
    IdQuery,
    LimitQuery,
    OffsetQuery,
    PipelineDep,
    ResourcesDep,
    SettingsDep,
    StoreDep,
)
from ansflow.api.events import publish_cancelled
from ansflow.api.schemas import (
    ExecutionCreate,
    ExecutionPublic,
    ExecutionSummaryPage,
    LogPublic,
    TriggerType,
)
from ansflow.api.views import execution_record, execution_summary, log_view
from ansflow.db.audit import Actor, audit
from ansflow.db.models import PipelineExecution
from ansflow.db.store import Store
from ansflow.errors import AnsFlowError, InfrastructureError
from ansflow.queue.dispatch import Dispatcher
from ansflow.spec.model import stored_spec
from ansflow.status import ExecutionStatus, StepStatus
from ansflow.steps.base import STEP_TYPES

logger = logging.getLogger(__name__)
router = APIRouter(tags=["executions"], responses={**ERRORS, **AUTH_ERRORS},
                   dependencies=[READ])

LOG_PAGE_BYTES = 256 * 1024
OUT_OF_RANGE: dict[int | str, dict[str, Any]] = {
    416: ERRORS[422] | {"description": "The offset is past the end of the log"}}


class OffsetOutOfRange(AnsFlowError):
    code, status_code = "offset_out_of_range", 416
LOG_PAGE_MAX = 4 * 1024 * 1024


def _trigger(body: ExecutionCreate, actor: Actor) -> dict[str, Any]:
    return {"ref": body.ref, "commit": body.commit, "event": "manual", "actor": actor.name,
            "variables": body.variables}


@router.post("/pipelines/{pipeline_id}/executions", status_code=202, dependencies=[TRIGGER],
             response_model=ExecutionPublic, responses=NOT_FOUND)
async def start_execution(pipeline: PipelineDep, store: StoreDep, dispatcher: DispatcherDep,
                          actor: ActorDep, body: ExecutionCreate | None = None
                          ) -> ExecutionPublic:
    """Start an execution of the pipeline's current version; it is ``queued`` until a
    worker takes it."""
    spec = stored_spec(pipeline.definition, pipeline.definition_format, STEP_TYPES)
    execution = await store.create_execution(pipeline, spec, "api",
                                             _trigger(body or ExecutionCreate(), actor))
    audit(store.session, actor, "execution.start", "execution", execution.id, trigger="api",
          pipeline_id=pipeline.id)
    # read in the same transaction: no second connection checkout, and nothing runs it yet
    record = await execution_record(store, execution, created=True)
    await store.commit()
    await _dispatch(store, dispatcher, execution)
    return record


async def _dispatch(store: Store, dispatcher: Dispatcher, execution: PipelineExecution) -> None:
    try:
        await dispatcher.dispatch(execution.id)
    except InfrastructureError:
        # no execution may exist without a job that runs it
        await store.delete_execution(execution)
        await store.commit()
        raise


@router.get("/executions", response_model=ExecutionSummaryPage)
async def list_executions(
    store: StoreDep, limit: LimitQuery = 50, offset: OffsetQuery = 0,
    pipeline_id: IdQuery = None,
    status: Annotated[list[ExecutionStatus] | None, Query(
        description="Any of these statuses (repeat: status=failed&status=timed_out)")] = None,
    trigger: Annotated[list[TriggerType] | None, Query(
        description="Any of these trigger types (repeat the parameter)")] = None,
) -> ExecutionSummaryPage:
    """Executions, newest first, filtered by pipeline, status and trigger type."""
    rows, total = await store.list_executions(
        limit=limit, offset=offset, pipeline_id=pipeline_id,
        status=[s.value for s in status or ()], trigger=[t.value for t in trigger or ()])
    return ExecutionSummaryPage(items=[execution_summary(e) for e in rows], total=total,
                                  limit=limit, offset=offset)


@router.get("/executions/{execution_id}", response_model=ExecutionPublic, responses=NOT_FOUND)
async def read_execution(execution: ExecutionDep, store: StoreDep, settings: SettingsDep
                         ) -> ExecutionPublic:
    """Status, timings, every step execution with its attempts, and the critical path."""
    return await execution_record(store, execution, settings.lease_seconds)


@router.get("/executions/{execution_id}/steps/{step}/logs", response_model=LogPublic,
            responses=NOT_FOUND | OUT_OF_RANGE)
async def read_step_log(
    execution: ExecutionDep, store: StoreDep,
    step: Annotated[str, Path(description="The step name", max_length=64)],
    offset: ByteOffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=LOG_PAGE_MAX, description="Bytes to read")
                     ] = LOG_PAGE_BYTES,
) -> LogPublic:
    """A step's log from ``offset`` (bytes); tail by asking again from ``next_offset``
    until ``complete``. An ``offset`` past what the step has written so far is 416,
    whether the step still runs or not."""
    row = await store.step_by_name(execution.id, step)
    if offset > row.log_bytes:
        raise OffsetOutOfRange(f"offset {offset} is past the end of the log of step "
                               f"{step!r} ({row.log_bytes} bytes so far)")
    chunks = await store.read_log(row.id, offset, limit)
    return log_view(list(chunks), offset, row.log_bytes, StepStatus(row.status).terminal,
                    limit)


@router.post("/executions/{execution_id}/retry", status_code=202, dependencies=[TRIGGER],
             response_model=ExecutionPublic, responses=NOT_FOUND | CONFLICT)
async def retry_execution(execution: ExecutionDep, store: StoreDep, dispatcher: DispatcherDep,
                          actor: ActorDep) -> ExecutionPublic:
    """A new execution (trigger ``retry``) of the same pipeline version: steps that
    succeeded are reused with their outputs, the others run again. 409 unless the
    execution ended without success."""
    retry = await store.create_retry(execution)
    audit(store.session, actor, "execution.retry", "execution", retry.id, retry_of=execution.id,
          pipeline_id=execution.pipeline_id)
    await store.commit()
    await _dispatch(store, dispatcher, retry)
    return await execution_record(store, retry)


@router.post("/executions/{execution_id}/cancel", status_code=202, dependencies=[TRIGGER],
             response_model=ExecutionPublic, responses=NOT_FOUND | CONFLICT)
async def cancel_execution(execution: ExecutionDep, store: StoreDep, actor: ActorDep,
                           resources: ResourcesDep, dispatcher: DispatcherDep
                           ) -> ExecutionPublic:
    """Ask to cancel: the worker holding the execution kills running steps' processes and
    marks pending steps ``cancelled``. 409 when the execution already ended."""
    cancelled = await store.request_cancel(execution)
    audit(store.session, actor, "execution.cancel", "execution", execution.id)
    await store.commit()
    if execution.parked_at is not None and not ExecutionStatus(execution.status).terminal:
        # no worker holds it: one must take it to finish the cancel
        try:
            await dispatcher.dispatch(execution.id, wake="cancel")
        except InfrastructureError as exc:
            logger.warning("execution %s: %s; the sweeper will finish the cancel",
                           execution.id, exc.message)
    record = await execution_record(store, execution)
    if cancelled:
        publish_cancelled(resources.bus, execution.id, execution.event_seq, record.steps)
    return record
