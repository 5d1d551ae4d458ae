"""The event bus on Redis pub/sub: any API process sees what any worker commits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio
import redis.exceptions

from ansflow.queue.bus import EventBatch, LocalBus, Subscription

logger = logging.getLogger(__name__)
CONFIRM_SECONDS = 5.0


class RedisBus(LocalBus):
    """Redis pub/sub between processes; local fan-out from one connection per process.

    Publishing goes through one task per process so batches leave in commit order; a
    Redis that is down drops them (logged once per outage)."""

    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self._client = redis.asyncio.Redis.from_url(url)
        self._prefix = f"{prefix}:events:"
        self._outbox: asyncio.Queue[EventBatch] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None
        self._pubsub = self._client.pubsub()
        self._reader: asyncio.Task[None] | None = None
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._failing = False

    def channel(self, execution_id: int) -> str:
        return f"{self._prefix}{execution_id}"

    def publish(self, batch: EventBatch) -> None:
        self._outbox.put_nowait(batch)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_loop(), name="event-publisher")

    async def _publish_loop(self) -> None:
        while not self._outbox.empty():
            batches = [self._outbox.get_nowait() for _ in range(self._outbox.qsize())]
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for batch in batches:
                        pipe.publish(self.channel(batch.execution_id), batch.encode())
                    await pipe.execute()
                self._failing = False
            except (redis.exceptions.RedisError, OSError) as exc:
                if not self._failing:
                    logger.warning("live events not published (Redis: %s); followers catch "
                                   "up from the database", exc)
                self._failing = True

    @contextlib.asynccontextmanager
    async def subscribe(self, execution_id: int) -> AsyncIterator[Subscription]:
        channel = self.channel(execution_id)
        subscription = Subscription(execution_id)
        subscribers = self._subscribers.setdefault(execution_id, set())
        first = not subscribers
        subscribers.add(subscription)
        try:
            if first:
                await self._listen(channel, subscription)
            elif (pending := self._confirmations.get(channel)) is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pending), CONFIRM_SECONDS)
            yield subscription
        finally:
            subscribers.discard(subscription)
            if not subscribers and self._subscribers.get(execution_id) is subscribers:
                del self._subscribers[execution_id]
                with contextlib.suppress(redis.exceptions.RedisError, OSError):
                    await self._pubsub.unsubscribe(channel)

    async def _listen(self, channel: str, subscription: Subscription) -> None:
        """Subscribe and wait for Redis to confirm; a failure leaves the follower to
        the database (its subscription starts interrupted)."""
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        try:
            await self._pubsub.subscribe(channel)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_loop(), name="event-reader")
            await asyncio.wait_for(asyncio.shield(confirmed), CONFIRM_SECONDS)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            logger.warning("live events: cannot subscribe to %s (%s)", channel, exc)
            subscription.interrupt()
        finally:
            if self._confirmations.get(channel) is confirmed:
                del self._confirmations[channel]

    async def _read_loop(self) -> None:
        delay = 0.1
        while self._subscribers or self._confirmations:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
                delay = 0.1
            except (redis.exceptions.RedisError, OSError) as exc:
                logger.warning("live events: Redis subscription broken (%s)", exc)
                for subscriptions in self._subscribers.values():
                    for subscription in subscriptions:
                        subscription.interrupt()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if message["type"] == "subscribe":
            confirmed = self._confirmations.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
        elif message["type"] == "message":
            try:
                batch = EventBatch.decode(message["data"])
            except (ValueError, KeyError, TypeError):
                logger.warning("live events: unreadable message on %s", channel)
                return
            super().publish(batch)

    async def close(self) -> None:
        if self._publisher is not None:
            # what the engine committed last should still reach other processes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._publisher), 2.0)
        for task in (self._publisher, self._reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await super().close()
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._pubsub.aclose()
        await self._client.aclose()
