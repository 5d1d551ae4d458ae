"""Artifact rows: written by the engine (fenced, through the recorder), read by the API,
expired by the retention cleanup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ansflow.db.models import Artifact, PipelineExecution, StepExecution
from ansflow.db.writes import rowcount
from ansflow.errors import NotFound


async def replace_artifacts(conn: AsyncConnection, execution_id: int, step: str,
                            rows: Sequence[dict[str, Any]]) -> bool:
    """The artifacts of one step (a re-run after a crash replaces its earlier ones)."""
    await conn.execute(delete(Artifact).where(Artifact.pipeline_execution_id == execution_id,
                                              Artifact.step == step))
    if rows:
        await conn.execute(insert(Artifact), [
            {"pipeline_execution_id": execution_id, "step": step, **row} for row in rows])
    return True


async def artifacts_of(session: AsyncSession, execution_id: int) -> Sequence[Artifact]:
    return (await session.scalars(select(Artifact)
                                  .where(Artifact.pipeline_execution_id == execution_id)
                                  .order_by(Artifact.id))).all()


async def get_artifact(session: AsyncSession, execution_id: int, artifact_id: int) -> Artifact:
    artifact = await session.scalar(select(Artifact).where(
        Artifact.id == artifact_id, Artifact.pipeline_execution_id == execution_id))
    if artifact is None:
        raise NotFound(f"execution {execution_id} has no artifact {artifact_id} (it may have "
                       "expired)")
    return artifact


async def expire_artifacts(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(delete(Artifact).where(Artifact.created_at < before))
    return rowcount(result)


async def artifact_digests(session: AsyncSession) -> set[str]:
    return set(await session.scalars(select(Artifact.sha256).distinct()))


async def manifest_digests(session: AsyncSession, completed_after: datetime) -> set[str]:
    """Manifests of steps of executions not over, or over since ``completed_after``."""
    manifests = await session.scalars(
        select(StepExecution.manifest).distinct()
        .join(PipelineExecution, PipelineExecution.id == StepExecution.pipeline_execution_id)
        .where(StepExecution.manifest.is_not(None),
               (PipelineExecution.completed_at.is_(None))
               | (PipelineExecution.completed_at >= completed_after)))
    return {m for m in manifests if m}
