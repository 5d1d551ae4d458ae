"""Bearer-token authentication, scope checks, and the caller as an audit ``Actor``.

Tokens are looked up by their SHA-256 (the only form stored). A verified token is kept
in a small cache for ``CACHE_SECONDS`` so that a busy client costs no query per request.
Before a cached token is trusted, the process compares the database's token revision
(bumped in the transaction of every revocation) with the one it saw last, at most every
``REVISION_CHECK_SECONDS``, and drops its cache when it moved: a revocation takes effect
on every API process within that time plus one query.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ansflow.api.metrics import MetricsCollector
from ansflow.db.audit import Actor
from ansflow.db.trust import TrustStore
from ansflow.errors import Forbidden, Unauthorized
from ansflow.resources import Resources
from ansflow.status import utcnow
from ansflow.trust.tokens import Scope, token_hash, well_formed

CACHE_SECONDS = 5.0
REVISION_CHECK_SECONDS = 0.5
bearer = HTTPBearer(auto_error=False, description="An API token: `ansflow token create`")


@dataclass(frozen=True, slots=True)
class Principal:
    token_id: int
    name: str
    scope: Scope
    expires_at: datetime | None


class TokenCache:
    """Verified tokens by digest. One per app; used from the app's event loop only."""

    def __init__(self, check_every: float = REVISION_CHECK_SECONDS) -> None:
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._check_every = check_every
        self._revision: int | None = None
        self._checked_at = float("-inf")
        self._epoch = 0
        self._lock = asyncio.Lock()

    @property
    def epoch(self) -> int:
        """Changes whenever the cache is dropped; ``put`` ignores lookups begun before."""
        return self._epoch

    async def get(self, digest: str, resources: Resources) -> tuple[bool, Principal | None]:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        await self._check_revision(resources)
        entry = self._entries.get(digest)
        return (False, None) if entry is None else (True, entry[1])

    def put(self, digest: str, principal: Principal | None, epoch: int) -> None:
        if epoch != self._epoch:
            return  # a revocation was seen while this lookup ran
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + CACHE_SECONDS, principal)

    async def _check_revision(self, resources: Resources) -> None:
        if time.monotonic() - self._checked_at < self._check_every:
            return
        async with self._lock:
            started = time.monotonic()
            if started - self._checked_at < self._check_every:
                return  # another request checked while this one waited
            async with resources.db.session() as session:
                revision = await TrustStore(session).token_revision()
            if revision != self._revision:
                self._entries.clear()
                self._epoch += 1
                self._revision = revision
            self._checked_at = started


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
    resources = cast(Resources, request.app.state.resources)
    hit, principal = await cache.get(digest, resources)
    if not hit:
        epoch = cache.epoch
        principal = await _lookup(resources, digest)
        cache.put(digest, principal, epoch)
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


async def current_actor(principal: Annotated[Principal, Depends(authenticate)]) -> Actor:
    """The caller for the audit log (the token checked by the route's scope dependency;
    FastAPI resolves ``authenticate`` once per request)."""
    return Actor.token(principal.name, principal.token_id)


ActorDep = Annotated[Actor, Depends(current_actor)]
