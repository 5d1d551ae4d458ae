"""Request dependencies: the session and store, the dispatcher, load-or-404, paging.

Resources live on ``app.state`` (opened by the lifespan); these functions are the only
place that reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from ansflow.api.schemas import MAX_INT64, ErrorEnvelope
from ansflow.config import Settings
from ansflow.db.models import Pipeline, PipelineExecution
from ansflow.db.store import Store
from ansflow.queue.dispatch import Dispatcher
from ansflow.resources import Resources


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorEnvelope, "description": description}


ERRORS: dict[int | str, dict[str, Any]] = {
    422: _error("The request is invalid; details name each field"),
    503: _error("The database or the queue is unavailable"),
}
AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _error("No valid bearer token"),
    403: _error("The token's scope does not allow this"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("No such resource")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _error("Conflicts with the current state")}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: _error("This token has too many event streams open")}


def get_settings_of(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_resources(request: Request) -> Resources:
    return cast(Resources, request.app.state.resources)


def get_dispatcher(request: Request) -> Dispatcher:
    return cast(Dispatcher, request.app.state.dispatcher)


async def get_session(resources: Annotated[Resources, Depends(get_resources)]
                      ) -> AsyncIterator[AsyncSession]:
    async with resources.db.session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings_of)]
ResourcesDep = Annotated[Resources, Depends(get_resources)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]


def get_store(session: SessionDep) -> Store:
    return Store(session)


StoreDep = Annotated[Store, Depends(get_store)]


IdPath = Annotated[int, Path(ge=1, le=MAX_INT64)]
"""An id in a path: every integer a route takes is bounded to signed 64 bits."""
IdQuery = Annotated[int | None, Query(ge=1, le=MAX_INT64)]


async def get_pipeline_or_404(pipeline_id: IdPath, store: StoreDep) -> Pipeline:
    return await store.get_pipeline(pipeline_id)


async def get_execution_or_404(execution_id: IdPath, store: StoreDep) -> PipelineExecution:
    return await store.get_execution(execution_id)


PipelineDep = Annotated[Pipeline, Depends(get_pipeline_or_404)]
ExecutionDep = Annotated[PipelineExecution, Depends(get_execution_or_404)]

LimitQuery = Annotated[int, Query(ge=1, le=500, description="Items per page")]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_INT64, description="Items to skip")]
ByteOffsetQuery = Annotated[int, Query(ge=0, le=MAX_INT64,
                                       description="Byte offset to read from")]
