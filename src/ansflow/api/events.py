"""GET /executions/{id}/events: live status and log events as Server-Sent Events.

The stream follows the database (every write is committed before anyone may see it), so
it works the same whichever API process or worker runs the execution. It ends with an
``end`` event once the execution is terminal and every log has been sent.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from ansflow.api.auth import READ
from ansflow.api.deps import AUTH_ERRORS, ERRORS, NOT_FOUND, IdPath, ResourcesDep
from ansflow.api.views import log_view
from ansflow.db.store import Store
from ansflow.resources import Resources
from ansflow.status import ExecutionStatus

router = APIRouter(tags=["executions"], responses={**ERRORS, **AUTH_ERRORS},
                   dependencies=[READ])
LOG_BYTES_PER_EVENT = 256 * 1024
KEEPALIVE_SECONDS = 15.0


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


class Follower:
    """Turns successive reads of one execution into the events that happened between."""

    def __init__(self, resources: Resources, execution_id: int) -> None:
        self.resources = resources
        self.execution_id = execution_id
        self.status: str | None = None
        self.steps: dict[str, str] = {}
        self.offsets: dict[str, int] = {}
        self.done = False

    async def poll(self) -> list[str]:
        events: list[str] = []
        async with self.resources.db.session() as session:
            store = Store(session)
            execution = await store.get_execution(self.execution_id)
            logs_pending = False
            for atomic, row in await store.step_rows(execution):
                if row.log_bytes > self.offsets.get(atomic.name, 0):
                    chunks = await store.read_log(row.id, self.offsets.get(atomic.name, 0),
                                                  LOG_BYTES_PER_EVENT)
                    view = log_view(list(chunks), self.offsets.get(atomic.name, 0),
                                    row.log_bytes, False, LOG_BYTES_PER_EVENT)
                    self.offsets[atomic.name] = view.next_offset
                    events.append(sse("log", {"step": atomic.name, "offset": view.offset,
                                              "next_offset": view.next_offset,
                                              "content": view.content}))
                    logs_pending |= view.next_offset < row.log_bytes
                if self.steps.get(atomic.name) != row.status:
                    self.steps[atomic.name] = row.status
                    events.append(sse("step", {"step": atomic.name, "status": row.status,
                                               "exit_code": row.exit_code,
                                               "error": row.error}))
            if execution.status != self.status:
                self.status = execution.status
                events.append(sse("execution", {"id": execution.id,
                                                "status": execution.status}))
            if ExecutionStatus(execution.status).terminal and not logs_pending:
                events.append(sse("end", {"id": execution.id, "status": execution.status}))
                self.done = True
        return events


@router.get("/executions/{execution_id}/events", response_class=StreamingResponse,
            responses={**NOT_FOUND, 200: {"content": {"text/event-stream": {}},
                                          "description": "Server-Sent Events"}})
async def execution_events(execution_id: IdPath, request: Request,
                           resources: ResourcesDep,
                           interval: float = Query(0.5, ge=0.05, le=10)) -> StreamingResponse:
    """Events ``execution`` (status), ``step`` (status, exit code, error), ``log`` (new
    log text of a step, with byte offsets) and a final ``end``. The database is read
    every ``interval`` seconds, so a change shorter than that may be seen only as its
    result (a quick step can go from ``pending`` straight to ``success``)."""
    # not the request's session: that one would be held until the stream ends (on SQLite
    # the only connection); the follower opens a session for each read instead
    async with resources.db.session() as session:
        execution = await Store(session).get_execution(execution_id)
    follower = Follower(resources, execution.id)
    return StreamingResponse(_stream(follower, request, interval),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _stream(follower: Follower, request: Request, interval: float
                  ) -> AsyncIterator[str]:
    quiet = 0.0
    while not follower.done:
        if await request.is_disconnected():
            return
        events = await follower.poll()
        for event in events:
            yield event
        quiet = 0.0 if events else quiet + interval
        if quiet >= KEEPALIVE_SECONDS:
            quiet = 0.0
            yield ": keep-alive\n\n"
        if not follower.done:
            await asyncio.sleep(interval)
