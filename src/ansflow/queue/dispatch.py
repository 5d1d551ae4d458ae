"""How a started execution reaches something that runs it.

``dispatch`` is called after the execution row is committed. Every implementation is
at-least-once and safe to repeat: the executor's lease makes a second delivery a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Protocol

import redis.asyncio
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix

from ansflow.config import Settings
from ansflow.engine.executor import PipelineExecutor
from ansflow.errors import InfrastructureError, map_errors
from ansflow.resources import Resources

logger = logging.getLogger(__name__)
RUN_EXECUTION = "run_execution"


class Dispatcher(Protocol):
    """Hands an execution id to whatever runs executions. Called from request handlers
    after commit, concurrently; must not block for the execution's duration."""

    name: str

    async def dispatch(self, execution_id: int, *, resume: bool = False,
                       wake: str | None = None) -> None:
        """``resume`` marks a re-dispatch of an orphaned execution (sweeper); ``wake``
        names the event that wakes a parked one (a decision, a freed concurrency group):
        each distinct event is queued once."""
        ...

    async def ping(self) -> None:
        """Raise ``InfrastructureError`` when the queue cannot be reached."""
        ...


def job_id(queue: str, execution_id: int, resume: bool, wake: str | None = None) -> str:
    """``<queue>:execution:<id>``. Job ids are global in a Redis (not per queue), so the
    queue name keeps deployments sharing one Redis apart. A resume gets an id per minute:
    arq refuses an id while its job or result key exists (so a fixed id could not be
    re-enqueued after a crash), and sweepers on many workers agree on the minute's id,
    so one resume job is queued. A wake-up gets an id per waking event (with ``resume``,
    both: one job per minute and event)."""
    base = f"{queue}:execution:{execution_id}"
    if resume:
        base += f":resume:{int(time.time() // 60)}"
    return base if wake is None else f"{base}:wake:{wake}"


async def waiting_executions(client: redis.asyncio.Redis, queue: str) -> int:
    """Execution jobs in arq's ``queue`` that no worker has taken: not arq's cron jobs
    (the same queue), not entries whose job data expired, not jobs being run (a job stays
    in the queue until it finishes)."""
    pattern = re.sub(r"([\\*?\[\]])", r"\\\1", f"{queue}:execution:") + "*"
    with map_errors("reading the queue depth"):
        ids = [member async for member, _ in client.zscan_iter(queue, match=pattern)]
        if not ids:
            return 0
        async with client.pipeline(transaction=False) as pipe:
            for job in ids:
                name = job.decode() if isinstance(job, bytes) else str(job)
                pipe.exists(job_key_prefix + name)
                pipe.exists(in_progress_key_prefix + name)
            flags = await pipe.execute()
    return sum(1 for stored, running in zip(flags[::2], flags[1::2], strict=True)
               if stored and not running)


def redis_settings(url: str) -> RedisSettings:
    return RedisSettings.from_dsn(url)


class InProcessDispatcher:
    """Runs executions as tasks in this process's loop (the embedded default)."""

    name = "inprocess"

    def __init__(self, resources: Resources) -> None:
        self._resources = resources
        self._tasks: set[asyncio.Task[None]] = set()

    async def dispatch(self, execution_id: int, *, resume: bool = False,
                       wake: str | None = None) -> None:
        task = asyncio.create_task(self._run(execution_id), name=f"execution-{execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, execution_id: int) -> None:
        try:
            await PipelineExecutor(self._resources, waker=self._wake).execute(execution_id)
        except InfrastructureError as exc:
            logger.error("execution %s: %s (the sweeper will resume it)", execution_id,
                         exc.message)

    async def _wake(self, execution_id: int, key: str) -> None:
        await self.dispatch(execution_id, wake=key)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        """Hand running executions back (their steps are killed and marked interrupted)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class ArqDispatcher:
    name = "arq"

    def __init__(self, pool: ArqRedis, queue_name: str) -> None:
        self._pool = pool
        self._queue = queue_name

    async def dispatch(self, execution_id: int, *, resume: bool = False,
                       wake: str | None = None) -> None:
        with map_errors(f"queueing execution {execution_id}"):
            await self._pool.enqueue_job(RUN_EXECUTION, execution_id,
                                         _job_id=job_id(self._queue, execution_id, resume,
                                                        wake),
                                         _queue_name=self._queue)

    async def ping(self) -> None:
        with map_errors("checking Redis"):
            await self._pool.ping()


@contextlib.asynccontextmanager
async def open_dispatcher(settings: Settings, resources: Resources
                          ) -> AsyncIterator[Dispatcher]:
    """The dispatcher chosen by ``ANSFLOW_EXECUTION_BACKEND``, open for the block."""
    if settings.backend == "inprocess":
        inprocess = InProcessDispatcher(resources)
        try:
            yield inprocess
        finally:
            await inprocess.close()
        return
    if settings.backend == "celery":
        from ansflow.queue.celery_dispatch import CeleryDispatcher

        celery = CeleryDispatcher(settings)
        try:
            yield celery
        finally:
            celery.close()
        return
    if not settings.redis_url:
        raise InfrastructureError("the arq backend needs ANSFLOW_REDIS_URL")
    with map_errors("connecting to Redis"):
        pool = await create_pool(redis_settings(settings.redis_url),
                                 default_queue_name=settings.queue_name)
    try:
        yield ArqDispatcher(pool, settings.queue_name)
    finally:
        await pool.aclose()
