"""GET /workers: the workers that run executions and steps, with their labels."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from ansflow.api.auth import READ
from ansflow.api.deps import AUTH_ERRORS, ERRORS, LimitQuery, OffsetQuery, SessionDep, SettingsDep
from ansflow.api.schemas import WorkerPage, WorkerPublic, WorkerStepPublic
from ansflow.db import workers
from ansflow.status import utcnow

router = APIRouter(prefix="/workers", tags=["workers"], responses={**ERRORS, **AUTH_ERRORS},
                   dependencies=[READ])


@router.get("", response_model=WorkerPage)
async def list_workers(session: SessionDep, settings: SettingsDep, limit: LimitQuery = 100,
                       offset: OffsetQuery = 0) -> WorkerPage:
    """Workers by start time: their labels, step slots, last heartbeat, whether they are
    live (heard from within the lease), and the steps running on them. A worker that
    stopped is gone from the list; one that crashed is listed, not live, for an hour."""
    rows = await workers.workers(session)
    page = rows[offset:offset + limit]
    running = await workers.running_steps(session, [w.id for w in page])
    live_since = utcnow() - timedelta(seconds=settings.lease_seconds)
    items = [WorkerPublic(id=w.id, host=w.host, labels=list(w.labels or []),
                          concurrency=w.concurrency, running=w.running,
                          started_at=w.started_at, heartbeat_at=w.heartbeat_at,
                          live=w.heartbeat_at >= live_since,
                          running_steps=[WorkerStepPublic(**s) for s in running.get(w.id, [])])
             for w in page]
    return WorkerPage(items=items, total=len(rows), limit=limit, offset=offset)
