"""/tokens: mint, list and revoke API tokens (admin). A token is shown once."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter

from ansflow.api.auth import ADMIN, READ, ActorDep, Principal
from ansflow.api.deps import AUTH_ERRORS, ERRORS, NOT_FOUND, IdPath, SessionDep
from ansflow.api.schemas import TokenCreate, TokenCreated, TokenPublic, WhoAmI
from ansflow.db.audit import audit
from ansflow.db.models import ApiToken
from ansflow.db.trust import TrustStore
from ansflow.status import utcnow
from ansflow.trust.tokens import new_token, token_hash, token_prefix

router = APIRouter(prefix="/tokens", tags=["tokens"], responses={**ERRORS, **AUTH_ERRORS},
                   dependencies=[ADMIN])
whoami_router = APIRouter(tags=["tokens"], responses={**ERRORS, **AUTH_ERRORS})


@whoami_router.get("/whoami", response_model=WhoAmI)
async def whoami(principal: Annotated[Principal, READ]) -> WhoAmI:
    """The calling token's name, scope and expiry (any valid token may ask)."""
    return WhoAmI(name=principal.name, scope=principal.scope.value,
                  expires_at=principal.expires_at)


def _public(token: ApiToken) -> TokenPublic:
    return TokenPublic(id=token.id, name=token.name, scope=token.scope, prefix=token.prefix,
                       created_at=token.created_at, expires_at=token.expires_at,
                       last_used_at=token.last_used_at, revoked_at=token.revoked_at)


@router.post("", status_code=201, response_model=TokenCreated)
async def create_token(body: TokenCreate, session: SessionDep, actor: ActorDep) -> TokenCreated:
    token = new_token()
    expires_at = (utcnow() + timedelta(seconds=body.expires_in_seconds)
                  if body.expires_in_seconds else None)
    row = await TrustStore(session).add_token(body.name, body.scope, token_prefix(token),
                                              token_hash(token), expires_at)
    audit(session, actor, "token.create", "token", row.id, name=row.name, scope=row.scope)
    await session.commit()
    return TokenCreated(**_public(row).model_dump(), token=token)


@router.get("", response_model=list[TokenPublic])
async def list_tokens(session: SessionDep) -> list[TokenPublic]:
    return [_public(t) for t in await TrustStore(session).list_tokens()]


@router.delete("/{token_id}", response_model=TokenPublic, responses=NOT_FOUND)
async def revoke_token(token_id: IdPath, session: SessionDep, actor: ActorDep) -> TokenPublic:
    """Revoke; every API process refuses it within a second."""
    row = await TrustStore(session).revoke_token(token_id)
    audit(session, actor, "token.revoke", "token", row.id, name=row.name)
    await session.commit()
    return _public(row)
