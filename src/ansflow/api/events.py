"""GET /executions/{id}/events: each committed change, pushed as Server-Sent Events.

The stream subscribes to the execution on the event bus, then catches up from the
database (everything after ``Last-Event-ID`` or ``?after=``; from the start without
them), then forwards what the bus brings. When the bus is quiet for ``interval`` seconds
it looks at the database once (a bus may lose messages, and a worker may publish on a
bus this process cannot hear); a gap in the commit numbers triggers a catch-up too.
It ends with an ``end`` event once the execution is terminal and everything was sent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from ansflow.api.auth import READ, Principal
from ansflow.api.deps import (
    AUTH_ERRORS,
    ERRORS,
    NOT_FOUND,
    TOO_MANY,
    IdPath,
    ResourcesDep,
    SettingsDep,
)
from ansflow.api.follow import Follower, LogFilter, Sse
from ansflow.api.schemas import StepPublic
from ansflow.db.store import Store
from ansflow.errors import AnsFlowError
from ansflow.queue.bus import EventBatch, EventBus, Subscription
from ansflow.status import ExecutionStatus

router = APIRouter(tags=["executions"], responses={**ERRORS, **AUTH_ERRORS})
SHUTDOWN_GRACE_SECONDS = 2.0


class TooManyStreams(AnsFlowError):
    code, status_code = "too_many_streams", 429


class StreamSlots:
    """Open streams per token in this process, capped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[int] = Counter()

    def take(self, token_id: int) -> BackgroundTask:
        if self.open[token_id] >= self.limit:
            raise TooManyStreams(f"this token already has {self.limit} event streams open "
                                 "on this server; close one first")
        self.open[token_id] += 1
        released = False

        async def release() -> None:  # in the loop, not a thread: the counter is not locked
            nonlocal released
            if not released:
                released = True
                self.open[token_id] -= 1
                if self.open[token_id] <= 0:
                    del self.open[token_id]

        return BackgroundTask(release)


def _after(after: int | None, last_event_id: str | None) -> int:
    if after is not None:
        return after
    if last_event_id is not None and last_event_id.strip().isdigit():
        return int(last_event_id.strip())
    return -1


@router.get(
    "/executions/{execution_id}/events", response_class=EventSourceResponse,
    responses={**NOT_FOUND, **TOO_MANY,
               200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"},
               204: {"description": "The execution ended and nothing is left after the id"}})
async def execution_events(
    execution_id: IdPath, request: Request, resources: ResourcesDep,
    settings: SettingsDep, principal: Annotated[Principal, READ],
    after: Annotated[int | None, Query(ge=-1, le=2**62, description=(
        "Resume after this event id (as the Last-Event-ID header does); -1: from the "
        "start"))] = None,
    last_event_id: Annotated[str | None, Header(max_length=32)] = None,
    logs: Annotated[bool, Query(description="Send log text (false: statuses only)")] = True,
    step: Annotated[list[str] | None, Query(max_length=64, description=(
        "Only these steps' log text (repeat the parameter)"))] = None,
    interval: Annotated[float, Query(gt=0, le=60, description=(
        "Seconds of quiet on the bus after which the database is looked at; raised to "
        "the server's minimum"))] = 5.0,
) -> Response:
    """Events ``execution`` (status), ``step`` (status, exit code, error), ``log`` (a
    step's new log text with its byte ``offset`` and ``next_offset``) and a final
    ``end``. Each event's ``id`` is the number of the transaction that committed it
    (set on the last event of each transaction); send it back as ``Last-Event-ID``
    (or ``?after=``) to resume with nothing lost. Live events carry ``at``, the commit
    time in Unix seconds."""
    async with resources.db.session() as session:  # not held while streaming
        execution = await Store(session).get_execution(execution_id)
    since = _after(after, last_event_id)
    if ExecutionStatus(execution.status).terminal and 0 <= execution.event_seq <= since:
        return Response(status_code=204)  # tells EventSource not to reconnect
    slots = cast(StreamSlots, request.app.state.stream_slots)
    release = slots.take(principal.token_id)
    follower = Follower(resources, execution.id, since,
                        LogFilter(logs, frozenset(step or ())))
    wait = max(interval, settings.events_min_poll_seconds)
    shutdown = anyio.Event()
    return EventSourceResponse(
        _stream(follower, resources.bus, wait, release, shutdown), background=release,
        ping=settings.events_keepalive_seconds, sep="\n", shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS, headers={"Cache-Control": "no-cache"})


async def _stream(follower: Follower, bus: EventBus, wait: float, release: BackgroundTask,
                  shutdown: anyio.Event) -> AsyncIterator[ServerSentEvent]:
    """The server stopping sets ``shutdown``: the stream then ends as a finished response
    (the client reconnects elsewhere with its last id)."""
    try:
        async with bus.subscribe(follower.execution_id) as subscription, \
                anyio.create_task_group() as watch:
            watch.start_soon(_interrupt_on, shutdown, subscription)
            async for sse in follower.catch_up():
                yield _wire(sse)
            while not follower.done and not shutdown.is_set():
                batch = await subscription.get(wait)
                interrupted, subscription.interrupted = subscription.interrupted, False
                if shutdown.is_set():
                    break
                for sse in await _next(follower, batch, interrupted):
                    yield _wire(sse)
            watch.cancel_scope.cancel()
    finally:
        await release()


async def _interrupt_on(shutdown: anyio.Event, subscription: Subscription) -> None:
    await shutdown.wait()
    subscription.interrupt()


async def _next(follower: Follower, batch: EventBatch | None, interrupted: bool
                ) -> list[Sse]:
    if batch is not None and not interrupted:
        events = follower.live(batch)
        if events is not None:
            return events
    elif batch is None and not interrupted and not await follower.changed():
        return []
    return [sse async for sse in follower.catch_up()]


def _wire(sse: Sse) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(sse.data, default=str), event=sse.event, id=sse.id,
                           sep="\n")


def publish_cancelled(bus: EventBus, execution_id: int, seq: int, steps: list[StepPublic]
                      ) -> None:
    """Publish what cancelling a queued execution committed (it never reached a worker,
    so no engine publishes it)."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("step", {"step": s.name, "status": s.status, "exit_code": None, "error": s.error})
        for s in steps if s.status == "cancelled"]
    events.append(("execution", {"id": execution_id, "status": "cancelled"}))
    bus.publish(EventBatch(execution_id, seq, tuple(events)))
