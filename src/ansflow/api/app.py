"""The FastAPI application: lifespan, the error envelope, the body limit, the routers.

``create_app`` builds an app whose resources (database engine, dispatcher, Redis) are
opened by the lifespan, inside the loop that serves requests; nothing is module-global.
Every 4xx/5xx answer is ``{"error": {"code", "message", "details"}}``, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import redis.asyncio
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ansflow import __version__
from ansflow.api import events, health, ui
from ansflow.api.auth import TokenCache
from ansflow.api.metrics import MetricsCollector
from ansflow.api.routes import (
    approvals,
    artifacts,
    audit,
    deployments,
    executions,
    pipelines,
    secrets,
    tokens,
    webhooks,
    workers,
)
from ansflow.api.schemas import ErrorBody, ErrorEnvelope
from ansflow.config import Settings, get_settings
from ansflow.errors import AnsFlowError, Unauthorized
from ansflow.queue.dispatch import open_dispatcher
from ansflow.queue.sweeper import (
    expire_audit_events,
    expire_store,
    forget_replays,
    repeat,
    sweep_once,
)
from ansflow.resources import Resources
from ansflow.triggers.schedules import start_due_schedules
from ansflow.trust.sandbox import start_sandbox

logger = logging.getLogger(__name__)
API_PREFIX = "/api/v1"
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
    415: "unsupported_media_type",
}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (the environment's settings when None: ``ansflow serve``)."""
    settings = settings or get_settings()
    app = AnsFlowAPI(
        title="AnsFlow", version=__version__, lifespan=_lifespan,
        description="Asyncio-native CI/CD pipeline execution service.",
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.metrics = MetricsCollector()
    app.state.token_cache = TokenCache()
    app.state.stream_slots = events.StreamSlots(settings.events_max_streams_per_token)
    app.include_router(pipelines.router, prefix=API_PREFIX)
    app.include_router(executions.router, prefix=API_PREFIX)
    app.include_router(approvals.router, prefix=API_PREFIX)
    app.include_router(artifacts.router, prefix=API_PREFIX)
    app.include_router(events.router, prefix=API_PREFIX)
    app.include_router(secrets.router, prefix=API_PREFIX)
    app.include_router(deployments.router, prefix=API_PREFIX)
    app.include_router(webhooks.router, prefix=API_PREFIX)
    app.include_router(tokens.router, prefix=API_PREFIX)
    app.include_router(tokens.whoami_router, prefix=API_PREFIX)
    app.include_router(audit.router, prefix=API_PREFIX)
    app.include_router(workers.router, prefix=API_PREFIX)
    app.include_router(health.router)
    ui.mount(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_exception_handler(AnsFlowError, _ansflow_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    for infrastructure in (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                           redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        app.add_exception_handler(infrastructure, _infrastructure_error)
    app.add_exception_handler(Exception, _internal_error)
    return app


class AnsFlowAPI(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            schema = super().openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                pipelines.document_schemas())
        return super().openapi()


def operation_id(route: APIRoute) -> str:
    """The route function's name (``start_execution``): what generated clients call it.
    Names are unique across the API (a test holds them to it)."""
    return route.name


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # executions run in this process only with the in-process backend
    app.state.sandbox = await asyncio.to_thread(start_sandbox, settings, "api",
                                                reap=settings.backend == "inprocess")
    async with contextlib.AsyncExitStack() as stack:
        resources = await stack.enter_async_context(Resources.open(settings))
        app.state.resources = resources
        app.state.dispatcher = await stack.enter_async_context(
            open_dispatcher(settings, resources))
        app.state.redis = None
        if settings.backend == "arq" and settings.redis_url:
            client = redis.asyncio.Redis.from_url(settings.redis_url)
            stack.push_async_callback(client.aclose)
            app.state.redis = client
        if settings.backend != "arq":  # arq workers sweep and schedule through their cron
            for job in (sweep_once, start_due_schedules, forget_replays, expire_audit_events,
                        expire_store):
                task = asyncio.create_task(repeat(job, resources, app.state.dispatcher))
                stack.push_async_callback(_stop, task)
        logger.info("AnsFlow API ready (%s backend)", app.state.dispatcher.name)
        yield


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def envelope(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorEnvelope(error=ErrorBody(code=code, message=message, details=details or []))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


async def _ansflow_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AnsFlowError)
    if exc.status_code >= 500:
        logger.warning("%s %s: %s", request.method, request.url.path, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return envelope(exc.status_code, exc.code, exc.message, [d.to_dict() for d in exc.details],
                    headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    details = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            field = "body"
            message = f"invalid JSON: {error.get('ctx', {}).get('error', message)}"
        details.append({"field": field, "message": message})
    first = details[0] if details else {"field": "request", "message": "invalid request"}
    return envelope(422, "invalid_request", f"{first['field']}: {first['message']}", details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    phrase = _phrase(status)
    message = exc.detail if exc.detail and exc.detail != phrase else phrase
    if status == 404 and message == phrase:
        message = f"no such path: {request.url.path}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    return envelope(status, HTTP_CODES.get(status, "http_error"), message,
                    headers=dict(exc.headers or {}))


async def _infrastructure_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        message = f"the database is unavailable ({exc.orig})"
    else:
        message = f"Redis is unavailable ({exc})"
    logger.warning("%s %s: %s", request.method, request.url.path, message)
    return envelope(503, "service_unavailable", message)


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return envelope(500, "internal_error", "internal error")


class BodyTooLarge(HTTPException):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body is larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_bytes``: by Content-Length before reading, and by
    counting the bytes of a streamed (chunked) body as the app reads it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            too_large = BodyTooLarge(self.max_bytes)
            response = envelope(413, "payload_too_large", too_large.detail)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # an HTTPException passes FastAPI's body parsing unchanged
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
