"""GET /audit: who started, cancelled, retried, approved and changed what (admin)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from ansflow.api.auth import ADMIN
from ansflow.api.deps import AUTH_ERRORS, ERRORS, LimitQuery, OffsetQuery, SessionDep
from ansflow.api.schemas import AuditEventPublic, Page
from ansflow.db.audit import AuditFilter, list_events

router = APIRouter(prefix="/audit", tags=["audit"], responses={**ERRORS, **AUTH_ERRORS},
                   dependencies=[ADMIN])
Text = Annotated[str | None, Query(max_length=128)]


def _utc(moment: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


@router.get("", response_model=Page[AuditEventPublic])
async def list_audit_events(
    session: SessionDep, limit: LimitQuery = 50, offset: OffsetQuery = 0,
    action: Text = None, actor: Text = None, actor_type: Text = None,
    resource_type: Text = None, resource_id: Text = None,
    since: Annotated[datetime | None, Query(description="From this time (inclusive)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time")] = None,
) -> Page[AuditEventPublic]:
    """Audit records, newest first, filtered by exact action, actor, actor type, resource
    and a time range (ISO-8601; UTC when no zone is given)."""
    where = AuditFilter(action=action, actor=actor, actor_type=actor_type,
                        resource_type=resource_type, resource_id=resource_id,
                        since=_utc(since), until=_utc(until))
    rows, total = await list_events(session, where, limit, offset)
    return Page[AuditEventPublic](
        items=[AuditEventPublic.model_validate(row, from_attributes=True) for row in rows],
        total=total, limit=limit, offset=offset)
