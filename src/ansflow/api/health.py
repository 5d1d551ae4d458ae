"""Root endpoints for operators: liveness, readiness (database + queue), metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, cast

import redis.asyncio
from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text

from ansflow.api.auth import READ
from ansflow.api.deps import ERRORS, DispatcherDep, ResourcesDep, SessionDep, SettingsDep
from ansflow.api.metrics import MetricsCollector, take_snapshot
from ansflow.api.schemas import HealthPublic, ReadyPublic
from ansflow.errors import ErrorDetail, InfrastructureError, map_errors
from ansflow.queue.dispatch import waiting_executions
from ansflow.resources import Resources
from ansflow.trust.sandbox import Sandbox

router = APIRouter(tags=["health"])
PROBE_TIMEOUT = 5.0
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: ERRORS[503]}


class NotReady(InfrastructureError):
    code = "not_ready"


@router.get("/healthz", response_model=HealthPublic)
async def healthz() -> HealthPublic:
    """Liveness: the process answers."""
    return HealthPublic(status="ok")


@router.get("/readyz", response_model=ReadyPublic,
            responses={503: ERRORS[503] | {"description": "A dependency failed; "
                                                          "details name which"}})
async def readyz(request: Request, resources: ResourcesDep, dispatcher: DispatcherDep
                 ) -> ReadyPublic:
    """Readiness: the database answers ``SELECT 1`` and the queue answers a ping; also
    says which step sandbox this process uses."""
    names = ("database", f"queue ({dispatcher.name})")
    outcomes = await asyncio.gather(_probe(_ping_database(resources)), _probe(dispatcher.ping()))
    failures = [ErrorDetail(message=problem, field=name)
                for name, problem in zip(names, outcomes, strict=True) if problem]
    if failures:
        raise NotReady("not ready: " + "; ".join(f"{d.field}: {d.message}" for d in failures),
                       details=failures)
    sandbox = cast(Sandbox, request.app.state.sandbox)
    return ReadyPublic(status="ready", checks=dict.fromkeys(names, "ok"), sandbox=sandbox.mode,
                       sandbox_detail=sandbox.describe())


async def _ping_database(resources: Resources) -> None:
    with map_errors("checking the database"):
        async with resources.db.session() as session:
            await session.execute(text("SELECT 1"))


async def _probe(check: Awaitable[None]) -> str | None:
    """None when the check passed, else what went wrong."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await check
    except InfrastructureError as exc:
        return exc.message
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g} s"
    return None


@router.get("/metrics", response_model=str, response_class=PlainTextResponse, dependencies=[READ],
            responses=UNAVAILABLE)
async def metrics(request: Request, session: SessionDep, settings: SettingsDep,
                  dispatcher: DispatcherDep) -> Response:
    """Prometheus text format: queued and running executions, queue depth, refused
    requests, and the durations of executions and steps this process ran."""
    snapshot = await take_snapshot(session, settings.lease_seconds)
    snapshot.backend = dispatcher.name
    client = cast("redis.asyncio.Redis | None", request.app.state.redis)
    if client is not None:
        snapshot.queue_depth = await waiting_executions(client, settings.queue_name)
    collector = cast(MetricsCollector, request.app.state.metrics)
    return Response(collector.render(snapshot), media_type=CONTENT_TYPE_LATEST)
