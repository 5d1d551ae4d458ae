"""The audit log: who started, cancelled, retried or approved what, and who changed
pipelines, secrets and tokens.

``audit(session, actor, action, resource_type, resource_id, **details)`` adds the record
to the caller's session: it is committed with the change it describes, or not at all.
Records are append-only (``models.AuditEvent`` refuses an update at flush); only ``purge_before``
(the retention cleanup) deletes them.
"""

from __future__ import annotations

import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ansflow.db.models import AuditEvent
from ansflow.status import utcnow

PURGE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: ``Actor.token(principal.name, principal.token_id)`` for API calls, and the
    constructors below for the other ways in."""

    name: str
    type: str
    token_id: int | None = None

    @classmethod
    def token(cls, name: str, token_id: int) -> Actor:
        return cls(name, "token", token_id)

    @classmethod
    def webhook(cls, sender: str | None, provider: str) -> Actor:
        return cls(sender or f"{provider} webhook", "webhook")

    @classmethod
    def schedule(cls) -> Actor:
        return cls("schedule", "schedule")

    @classmethod
    def cli(cls) -> Actor:
        """The operating-system user running ``ansflow`` (``cli`` when it has no name)."""
        try:
            return cls(getpass.getuser() or "cli", "cli")
        except (KeyError, OSError):
            return cls("cli", "cli")


def audit(session: AsyncSession, actor: Actor, action: str, resource_type: str,
          resource_id: int | str | None, **details: Any) -> AuditEvent:
    """Record ``action`` (``"<resource>.<verb>"``, e.g. ``"step.approve"``) on a resource
    in ``session``; the caller's commit stores it together with the change. ``details``
    must be JSON values, and never a secret's value."""
    row = AuditEvent(created_at=utcnow(), actor=actor.name[:128], actor_type=actor.type,
                     token_id=actor.token_id, action=action, resource_type=resource_type,
                     resource_id=None if resource_id is None else str(resource_id),
                     details=details)
    session.add(row)
    return row


@dataclass(frozen=True, slots=True)
class AuditFilter:
    action: str | None = None
    actor: str | None = None
    actor_type: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(session: AsyncSession, where: AuditFilter, limit: int, offset: int
                      ) -> tuple[Sequence[AuditEvent], int]:
    """Matching records newest first, and how many match in all."""
    query = select(AuditEvent)
    for column, value in ((AuditEvent.action, where.action), (AuditEvent.actor, where.actor),
                          (AuditEvent.actor_type, where.actor_type),
                          (AuditEvent.resource_type, where.resource_type),
                          (AuditEvent.resource_id, where.resource_id)):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(AuditEvent.created_at >= where.since)
    if where.until is not None:
        query = query.where(AuditEvent.created_at < where.until)
    total = await session.scalar(select(func.count()).select_from(query.subquery()))
    rows = await session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit)
                                 .offset(offset))
    return rows.all(), int(total or 0)


async def purge_before(session: AsyncSession, cutoff: datetime) -> int:
    """Delete records older than ``cutoff``, a batch at a time (each batch committed, so
    a large first purge holds no long lock); returns how many went."""
    purged = 0
    while True:
        ids = (await session.scalars(select(AuditEvent.id).where(
            AuditEvent.created_at < cutoff).order_by(AuditEvent.id).limit(PURGE_BATCH))).all()
        if not ids:
            return purged
        await session.execute(delete(AuditEvent).where(AuditEvent.id.in_(ids)))
        await session.commit()
        purged += len(ids)
