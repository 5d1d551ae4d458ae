"""/deployments: the deployment records of successful ``deploy`` steps, newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from sqlalchemy import select

from ansflow.api.auth import READ
from ansflow.api.deps import (
    AUTH_ERRORS,
    ERRORS,
    IdQuery,
    LimitQuery,
    OffsetQuery,
    SessionDep,
)
from ansflow.api.schemas import DeploymentPage, DeploymentPublic
from ansflow.db.models import AtomicStep, PipelineExecution, StepExecution
from ansflow.status import StepStatus

router = APIRouter(prefix="/deployments", tags=["deployments"],
                   responses={**ERRORS, **AUTH_ERRORS}, dependencies=[READ])
# the environment lives in each step's JSON result, filtered here rather than with
# dialect-specific JSON SQL; this bounds how far back a listing looks
SCAN_LIMIT = 5000


@router.get("", response_model=DeploymentPage)
async def list_deployments(
    session: SessionDep, limit: LimitQuery = 50, offset: OffsetQuery = 0,
    environment: str | None = Query(None, max_length=64),
    pipeline_id: IdQuery = None,
) -> DeploymentPage:
    query = (select(StepExecution, AtomicStep.name, PipelineExecution.pipeline_id)
             .join(AtomicStep, StepExecution.atomic_step_id == AtomicStep.id)
             .join(PipelineExecution,
                   StepExecution.pipeline_execution_id == PipelineExecution.id)
             .where(AtomicStep.step_type == "deploy", StepExecution.status == StepStatus.SUCCESS)
             .order_by(StepExecution.completed_at.desc(), StepExecution.id.desc())
             .limit(SCAN_LIMIT))
    if pipeline_id is not None:
        query = query.where(PipelineExecution.pipeline_id == pipeline_id)
    rows = (await session.execute(query)).all()
    records = [_record(row, name, pid) for row, name, pid in rows
               if environment is None or row.result.get("environment") == environment]
    return DeploymentPage(items=records[offset:offset + limit], total=len(records), limit=limit,
                          offset=offset)


def _record(row: StepExecution, step: str, pipeline_id: int) -> DeploymentPublic:
    result: dict[str, Any] = row.result or {}
    return DeploymentPublic(
        environment=str(result.get("environment", "")), version=result.get("version"),
        commit=result.get("commit"), target=result.get("target"), url=result.get("url"),
        execution_id=row.pipeline_execution_id, pipeline_id=pipeline_id, step=step,
        deployed_at=row.completed_at, rolled_back_from=result.get("rolled_back_from"))
