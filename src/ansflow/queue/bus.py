"""The event bus: committed changes of an execution, pushed to whoever follows it.

The engine publishes one ``EventBatch`` per committed transaction (after the commit);
the API's events stream subscribes per execution. With Redis configured the batches
travel on Redis pub/sub (channel ``<queue name>:events:<execution id>``), so any API
process sees what any worker commits; otherwise on an in-process bus. Pub/sub may lose
messages (a subscriber that reconnects misses what was sent meanwhile): batches carry
the execution's commit sequence number, and a follower that sees a gap, or that was
told its subscription was interrupted, catches up from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ansflow.config import Settings

QUEUE_LIMIT = 2000
"""Batches a slow subscriber may have pending; past it, it catches up from the database."""


@dataclass(frozen=True, slots=True)
class EventBatch:
    """The changes one transaction committed: ``events`` are ``(kind, data)`` pairs with
    kind ``execution``, ``step`` or ``log``; ``seq`` is the execution's commit number
    (the events stream's ``id``); ``at`` the commit time (Unix seconds)."""

    execution_id: int
    seq: int
    events: tuple[tuple[str, dict[str, Any]], ...]
    at: float = field(default_factory=time.time)

    def encode(self) -> str:
        return json.dumps({"execution_id": self.execution_id, "seq": self.seq, "at": self.at,
                           "events": [list(e) for e in self.events]}, default=str)

    @classmethod
    def decode(cls, raw: str | bytes) -> EventBatch:
        body = json.loads(raw)
        return cls(int(body["execution_id"]), int(body["seq"]),
                   tuple((str(kind), dict(data)) for kind, data in body["events"]),
                   float(body["at"]))


class Subscription:
    """Batches of one execution in commit order, for one follower. ``interrupted`` is set
    when batches may have been lost (overflow, a broken bus connection)."""

    def __init__(self, execution_id: int) -> None:
        self.execution_id = execution_id
        self._pending: deque[EventBatch] = deque()
        self._ready = asyncio.Event()
        self.interrupted = False

    def put(self, batch: EventBatch) -> None:
        if len(self._pending) >= QUEUE_LIMIT:
            self._pending.clear()
            self.interrupted = True
        else:
            self._pending.append(batch)
        self._ready.set()

    def interrupt(self) -> None:
        self.interrupted = True
        self._ready.set()

    async def get(self, wait: float) -> EventBatch | None:
        """The next batch; None after ``wait`` seconds or when interrupted."""
        if not self._pending and not self.interrupted:
            self._ready.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready.wait()
        return self._pending.popleft() if self._pending else None


class EventBus(Protocol):
    """Publishes after commit and fans out to subscribers.

    ``publish`` is called from the engine's loop right after a commit; it never blocks or
    raises (a lost event costs a follower a catch-up, never an execution). ``subscribe``
    returns once the subscription is in effect, so a follower that reads the database
    after it misses nothing committed later."""

    def publish(self, batch: EventBatch) -> None: ...

    def subscribe(self, execution_id: int
                  ) -> contextlib.AbstractAsyncContextManager[Subscription]: ...

    async def close(self) -> None: ...


class LocalBus:
    """Subscribers in this process only (the embedded default: executions run here)."""

    def __init__(self) -> None:
        self._subscribers: dict[int, set[Subscription]] = {}

    def publish(self, batch: EventBatch) -> None:
        for subscription in self._subscribers.get(batch.execution_id, ()):
            subscription.put(batch)

    @contextlib.asynccontextmanager
    async def subscribe(self, execution_id: int) -> AsyncIterator[Subscription]:
        subscription = Subscription(execution_id)
        self._subscribers.setdefault(execution_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers[execution_id]
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscribers[execution_id]

    async def close(self) -> None:
        self._subscribers.clear()


def open_bus(settings: Settings) -> EventBus:
    """Redis pub/sub when Redis is configured, else the in-process bus. Nothing connects
    before the first publish or subscribe."""
    if settings.redis_url:
        from ansflow.queue.redis_bus import RedisBus  # redis loads only when configured

        return RedisBus(settings.redis_url, settings.queue_name)
    return LocalBus()
