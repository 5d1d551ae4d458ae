"""Bearer-token authentication and scope checks.

Tokens are looked up by their SHA-256 (the only form stored). A verified token is kept
in a small cache for ``CACHE_SECONDS`` so a busy client costs no query per request;
a revocation therefore takes effect within that time on every API process.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ansflow.api.metrics import MetricsCollector
from ansflow.db.trust import TrustStore
from ansflow.errors import Forbidden, Unauthorized
from ansflow.resources import Resources
from ansflow.status import utcnow
from ansflow.trust.tokens import Scope, token_hash, well_formed

CACHE_SECONDS = 5.0
bearer = HTTPBearer(auto_error=False, description="An API token: `ansflow token create`")


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    scope: Scope
    expires_at: datetime | None


class TokenCache:
    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}

    def get(self, digest: str) -> tuple[bool, Principal | None]:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, digest: str, principal: Principal | None) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + CACHE_SECONDS, principal)


async def _lookup(resources: Resources, digest: str) -> Principal | None:
    async with resources.db.session() as session:
        trust = TrustStore(session)
        row = await trust.token_by_hash(digest)
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        if row.revoked_at is not None:
            return None
        await trust.touch_token(row.id)
        await session.commit()
        return Principal(row.id, row.name, Scope(row.scope), row.expires_at)


def _reject(request: Request, reason: str, message: str) -> Unauthorized:
    cast(MetricsCollector, request.app.state.metrics).auth_failures[reason] += 1
    return Unauthorized(message)


async def authenticate(request: Request,
                       credentials: Annotated[HTTPAuthorizationCredentials | None,
                                              Depends(bearer)]) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _reject(request, "missing", "authentication required: send "
                                          "'Authorization: Bearer <token>'")
    token = credentials.credentials
    if not well_formed(token):
        raise _reject(request, "malformed", "invalid token")
    digest = token_hash(token)
    cache: TokenCache = request.app.state.token_cache
    hit, principal = cache.get(digest)
    if not hit:
        principal = await _lookup(cast(Resources, request.app.state.resources), digest)
        cache.put(digest, principal)
    if principal is None:
        raise _reject(request, "unknown", "invalid token")
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise _reject(request, "expired", "the token has expired")
    return principal


def require(scope: Scope) -> Any:
    """A dependency: the caller's token must grant ``scope`` (admin ⊃ trigger ⊃ read)."""

    async def check(request: Request,
                    principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.scope.allows(scope):
            cast(MetricsCollector, request.app.state.metrics).auth_failures["scope"] += 1
            raise Forbidden(f"this token has scope {principal.scope.value!r}; "
                            f"{scope.value!r} is needed")
        return principal

    return Depends(check)


READ = require(Scope.READ)
TRIGGER = require(Scope.TRIGGER)
ADMIN = require(Scope.ADMIN)
