"""Queries for tokens, secrets, webhook deliveries and schedule slots."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ansflow.db.models import (
    ApiToken,
    ScheduleRun,
    Secret,
    TokenRevision,
    WebhookBody,
    WebhookDelivery,
)
from ansflow.db.writes import rowcount
from ansflow.errors import NotFound
from ansflow.status import utcnow


def secret_scope(pipeline_id: int | None) -> str:
    return "global" if pipeline_id is None else f"pipeline:{pipeline_id}"


class TrustStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # tokens ------------------------------------------------------------------------------

    async def add_token(self, name: str, scope: str, prefix: str, token_hash: str,
                        expires_at: datetime | None) -> ApiToken:
        token = ApiToken(name=name, scope=scope, prefix=prefix, token_hash=token_hash,
                         expires_at=expires_at, created_at=utcnow())
        self.session.add(token)
        await self.session.flush()
        return token

    async def token_by_hash(self, token_hash: str) -> ApiToken | None:
        return await self.session.scalar(
            select(ApiToken).where(ApiToken.token_hash == token_hash))

    async def list_tokens(self) -> Sequence[ApiToken]:
        return (await self.session.scalars(select(ApiToken).order_by(ApiToken.id))).all()

    async def revoke_token(self, token_id: int) -> ApiToken:
        """Revoke (idempotent); the revision bump commits with it, and tells every API
        process to drop its cached tokens."""
        token = await self.session.get(ApiToken, token_id)
        if token is None:
            raise NotFound(f"token {token_id} not found")
        if token.revoked_at is None:
            token.revoked_at = utcnow()
            await self.session.execute(update(TokenRevision).where(TokenRevision.id == 1)
                                       .values(revision=TokenRevision.revision + 1))
        return token

    async def token_revision(self) -> int:
        return int(await self.session.scalar(
            select(TokenRevision.revision).where(TokenRevision.id == 1)) or 0)

    async def touch_token(self, token_id: int) -> None:
        await self.session.execute(update(ApiToken).where(ApiToken.id == token_id)
                                   .values(last_used_at=utcnow()))

    # secrets -----------------------------------------------------------------------------

    async def put_secret(self, name: str, pipeline_id: int | None, ciphertext: str) -> Secret:
        scope = secret_scope(pipeline_id)
        secret = await self.session.scalar(
            select(Secret).where(Secret.scope == scope, Secret.name == name))
        if secret is None:
            secret = Secret(name=name, scope=scope, pipeline_id=pipeline_id,
                            ciphertext=ciphertext, created_at=utcnow(), updated_at=utcnow())
            self.session.add(secret)
        else:
            secret.ciphertext, secret.updated_at = ciphertext, utcnow()
        await self.session.flush()
        return secret

    async def list_secrets(self, pipeline_id: int | None = None) -> Sequence[Secret]:
        query = select(Secret).order_by(Secret.scope, Secret.name)
        if pipeline_id is not None:
            query = query.where(Secret.pipeline_id == pipeline_id)
        return (await self.session.scalars(query)).all()

    async def get_secret(self, secret_id: int) -> Secret:
        secret = await self.session.get(Secret, secret_id)
        if secret is None:
            raise NotFound(f"secret {secret_id} not found")
        return secret

    async def visible_secrets(self, pipeline_id: int) -> dict[str, str]:
        """Ciphertexts by name: global secrets, overridden by the pipeline's own."""
        rows = (await self.session.scalars(select(Secret).where(
            or_(Secret.scope == "global", Secret.pipeline_id == pipeline_id)))).all()
        ordered = sorted(rows, key=lambda s: s.scope != "global")
        return {s.name: s.ciphertext for s in ordered}

    # webhooks and schedules --------------------------------------------------------------

    async def find_delivery(self, provider: str, pipeline_id: int, delivery_id: str
                            ) -> WebhookDelivery | None:
        return await self.session.scalar(select(WebhookDelivery).where(
            WebhookDelivery.provider == provider, WebhookDelivery.pipeline_id == pipeline_id,
            WebhookDelivery.delivery_id == delivery_id))

    async def add_delivery(self, delivery: WebhookDelivery) -> bool:
        """False when the same delivery was recorded concurrently (unique key)."""
        try:
            async with self.session.begin_nested():
                self.session.add(delivery)
        except IntegrityError:
            return False
        return True

    async def claim_body(self, pipeline_id: int, body_sha256: str, delivery_id: str,
                         since: datetime) -> tuple[WebhookBody, bool]:
        """Record that ``delivery_id`` brought this body. Returns the body's row and whether
        this caller claimed it: False means an earlier delivery (the row's) brought the same
        body at or after ``since``, so this one is a replay. A row older than ``since`` that
        housekeeping has not deleted yet is taken over. Concurrent callers with the same
        body: exactly one claims it (the unique key decides)."""
        for _ in range(2):
            row = WebhookBody(pipeline_id=pipeline_id, body_sha256=body_sha256,
                              delivery_id=delivery_id, created_at=utcnow())
            try:
                async with self.session.begin_nested():
                    self.session.add(row)
                return row, True
            except IntegrityError:
                pass
            # a locking read sees the row the unique key clashed with, whatever the snapshot
            earlier = await self.session.scalar(select(WebhookBody).where(
                WebhookBody.pipeline_id == pipeline_id, WebhookBody.body_sha256 == body_sha256,
            ).with_for_update(read=True).execution_options(populate_existing=True))
            if earlier is not None:
                return earlier, await self._take_over(earlier, delivery_id, since)
            # housekeeping deleted it between the clash and the read: insert again
        # (a second clash is with a fresh row, which housekeeping leaves alone)
        return row, False

    async def _take_over(self, earlier: WebhookBody, delivery_id: str, since: datetime
                         ) -> bool:
        if earlier.created_at >= since:
            return False
        taken = await self.session.execute(update(WebhookBody).where(
            WebhookBody.id == earlier.id, WebhookBody.created_at < since,
        ).values(delivery_id=delivery_id, created_at=utcnow(), execution_id=None))
        await self.session.refresh(earlier)
        return rowcount(taken) == 1

    async def forget_bodies(self, before: datetime) -> int:
        """Delete the body digests recorded before ``before``; the number deleted."""
        result = await self.session.execute(
            delete(WebhookBody).where(WebhookBody.created_at < before))
        return rowcount(result)

    async def claim_slot(self, pipeline_id: int, schedule: str, slot_at: datetime
                         ) -> ScheduleRun | None:
        """The slot's row if this caller is the first to claim it, else None."""
        run = ScheduleRun(pipeline_id=pipeline_id, schedule=schedule[:160], slot_at=slot_at,
                          created_at=utcnow())
        try:
            async with self.session.begin_nested():
                self.session.add(run)
        except IntegrityError:
            return None
        return run
