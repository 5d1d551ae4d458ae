"""The step queue on Redis: steps an execution's holder hands to other workers.

One list per set of labels (``<queue>:steps:<label,label>``; ``<queue>:steps:`` for
steps that need none), and a set naming every such list (``<queue>:step-labels``). A
worker pops, with one ``BLPOP``, from every list whose labels it has, and only while it
has a free step slot: its slots bound what it runs, the steps its own executions run here
and those it pops (an entry popped just as its own executions took the last slot goes
back to the head of its list). A popped hand-over is only a
hint: the step's row, claimed with the hand-over's token, decides (``db/dispatch.py``),
so a hand-over popped twice, or after it was replaced, runs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import redis.asyncio
import redis.exceptions

from ansflow.config import Settings
from ansflow.engine.placement import HandOver
from ansflow.engine.remote import HandedSteps
from ansflow.errors import AnsFlowError, map_errors
from ansflow.queue.bus import EventBus
from ansflow.spec.backoff import delays

logger = logging.getLogger(__name__)
POP_SECONDS = 1.0
"""Longest blocking pop: how soon a worker notices a list of labels new to it."""


class Slots:
    """This worker's step slots (``--concurrency``)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._freed = asyncio.Event()

    def try_take(self) -> bool:
        if self.used >= self.size:
            return False
        self.used += 1
        return True

    async def free(self) -> None:
        """Until a slot is free (not taking it)."""
        while self.used >= self.size:
            self._freed.clear()
            await self._freed.wait()

    def release(self) -> None:
        self.used -= 1
        self._freed.set()


class RedisStepQueue:
    """This worker's side of the step queue: ``StepQueue`` for its schedulers, and the
    loop that pops hand-overs for ``HandedSteps``."""

    def __init__(self, settings: Settings, bus: EventBus) -> None:
        assert settings.redis_url
        self.labels = frozenset(settings.worker_labels)
        self.bus = bus
        self.slots = Slots(settings.step_concurrency)
        self._client = redis.asyncio.Redis.from_url(settings.redis_url)
        self._prefix = f"{settings.queue_name}:steps:"
        self._registry = f"{settings.queue_name}:step-labels"
        self._keys: list[str] = []
        self._keys_at = 0.0
        self._running: set[asyncio.Task[None]] = set()

    def key(self, labels: Sequence[str]) -> str:
        return self._prefix + ",".join(sorted(labels))

    def try_local(self, labels: Sequence[str]) -> bool:
        return self.labels.issuperset(labels) and self.slots.try_take()

    def release_local(self) -> None:
        self.slots.release()

    async def hand_over(self, handover: HandOver) -> None:
        key = self.key(handover.labels)
        with map_errors(f"handing step {handover.step!r} to the step queue"):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.sadd(self._registry, key)
                pipe.rpush(key, handover.encode())
                await pipe.execute()

    async def pull(self, steps: HandedSteps) -> None:
        """Pop and run hand-overs until cancelled; a Redis outage is waited out."""
        waits = delays(0.5, 10.0)
        while True:
            await self.slots.free()
            try:
                popped = await self._pop()
                if popped is not None and not self.slots.try_take():
                    # this worker's own executions took the slot meanwhile: the entry
                    # goes back to the head of its list, first for the next free slot
                    await self._client.lpush(*popped)
                    continue
            except (redis.exceptions.RedisError, OSError) as exc:
                delay = next(waits)
                logger.warning("step queue: %s; trying again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                continue
            waits = delays(0.5, 10.0)
            if popped is None:
                continue
            try:
                handover = HandOver.decode(popped[1])
            except ValueError as exc:
                self.slots.release()
                logger.error("step queue: dropped an unreadable entry: %s", exc)
                continue
            task = asyncio.create_task(self._run(steps, handover),
                                       name=f"step-{handover.execution_id}-{handover.step}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, steps: HandedSteps, handover: HandOver) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.slots.release()

        try:
            await steps.run(handover, release)
        except AnsFlowError as exc:
            logger.error("execution %s step %s: %s", handover.execution_id, handover.step,
                         exc.message)
        except Exception:
            logger.exception("execution %s step %s: running the hand-over failed",
                             handover.execution_id, handover.step)
        finally:
            release()

    async def _pop(self) -> tuple[str, bytes] | None:
        now = time.monotonic()
        if now - self._keys_at >= POP_SECONDS:
            known = await self._client.smembers(self._registry)
            names = sorted(k.decode() if isinstance(k, bytes) else str(k) for k in known)
            self._keys = [k for k in names if self.labels.issuperset(
                label for label in k.removeprefix(self._prefix).split(",") if label)]
            self._keys_at = now
        keys = self._keys or [self.key(())]
        popped = await self._client.blpop(keys, timeout=POP_SECONDS)
        return None if popped is None else (popped[0].decode(), bytes(popped[1]))

    async def close(self) -> None:
        """Hand back what runs here (each step's attempt ``interrupted``)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._client.aclose()
