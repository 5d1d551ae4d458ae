"""``ansflow worker``: an arq worker that runs executions with ``PipelineExecutor``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import prometheus_client
import redis.exceptions
from arq import cron
from arq.worker import Worker, func

from ansflow.config import Settings, get_settings
from ansflow.engine.executor import PipelineExecutor
from ansflow.engine.metrics import REGISTRY as METRICS
from ansflow.engine.remote import HandedSteps
from ansflow.queue.dispatch import RUN_EXECUTION, ArqDispatcher, redis_settings
from ansflow.queue.presence import Presence, forget_lost_workers
from ansflow.queue.step_queue import RedisStepQueue
from ansflow.queue.sweeper import expire_audit_events, expire_store, forget_replays, sweep_once
from ansflow.resources import Resources
from ansflow.spec.backoff import delays
from ansflow.triggers.schedules import start_due_schedules
from ansflow.trust.sandbox import start_sandbox

logger = logging.getLogger(__name__)
# arq's default of 300 s would kill long pipelines; executions carry their own timeout
JOB_TIMEOUT = 24 * 3600
# enqueue-to-pickup delay of an idle worker; an idle poll is one cheap Redis call
POLL_SECONDS = 0.02
HEALTH_SECONDS = 10
PERIODIC_JOBS = ("ansflow-sweep", "ansflow-schedules", "ansflow-housekeeping")


class QuietPeriodicJobs(logging.Filter):
    """Drops arq's start and end lines of the periodic jobs: two lines a second each
    would bury what the worker has to say. Their failures still show (arq logs them as
    errors)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(f" {name}" in message for name in PERIODIC_JOBS)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.get("settings") or get_settings()
    await asyncio.to_thread(start_sandbox, settings, "worker")
    ctx["stack"] = stack = contextlib.AsyncExitStack()
    ctx["resources"] = await stack.enter_async_context(Resources.open(settings))
    ctx["dispatcher"] = ArqDispatcher(ctx["redis"], settings.queue_name)
    resources: Resources = ctx["resources"]
    steps = ctx["steps"] = RedisStepQueue(settings, resources.bus)
    presence = Presence(resources, steps.labels, steps.slots.size, lambda: steps.slots.used)
    await presence.beat()
    stack.push_async_callback(presence.remove)
    stack.push_async_callback(steps.close)
    stack.push_async_callback(_cancel, asyncio.create_task(presence.run(), name="presence"))
    stack.push_async_callback(_cancel, asyncio.create_task(
        steps.pull(HandedSteps(resources)), name="step-queue"))
    logger.info("worker %s ready on queue %s (labels: %s; %d step slots)",
                resources.worker_id, settings.queue_name, ",".join(sorted(steps.labels)) or
                "none", steps.slots.size)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def shutdown(ctx: dict[str, Any]) -> None:
    if "stack" in ctx:
        await ctx["stack"].aclose()


async def run_execution(ctx: dict[str, Any], execution_id: int) -> str:
    """Idempotent: a terminal execution, or one another worker holds, returns at once."""
    dispatcher: ArqDispatcher = ctx["dispatcher"]

    async def wake(parked: int, key: str) -> None:
        await dispatcher.dispatch(parked, wake=key)

    result = await PipelineExecutor(ctx["resources"], waker=wake,
                                    steps=ctx["steps"]).execute(execution_id)
    return result.status.value


async def sweep(ctx: dict[str, Any]) -> list[int]:
    return await sweep_once(ctx["resources"], ctx["dispatcher"])


async def housekeeping(ctx: dict[str, Any]) -> int:
    forgotten = await forget_replays(ctx["resources"], ctx["dispatcher"])
    expired = await expire_store(ctx["resources"], ctx["dispatcher"])
    lost = await forget_lost_workers(ctx["resources"])
    return (forgotten + expired + lost
            + await expire_audit_events(ctx["resources"], ctx["dispatcher"]))


async def schedules(ctx: dict[str, Any]) -> list[int]:
    return await start_due_schedules(ctx["resources"], ctx["dispatcher"])


def build_worker(settings: Settings, health_key: str | None = None) -> Worker:
    """``health_key``: where arq notes every ``HEALTH_SECONDS`` that this worker's loop
    runs (``ansflow healthcheck`` looks for it); arq's per-queue key when None."""
    if not settings.redis_url:
        raise SystemExit("ansflow worker needs ANSFLOW_REDIS_URL (e.g. redis://127.0.0.1:6379/0)")
    step = settings.sweep_interval_seconds
    return Worker(
        functions=[func(run_execution, name=RUN_EXECUTION, max_tries=1000)],
        cron_jobs=[
            cron(sweep, name=PERIODIC_JOBS[0], second=set(range(0, 60, step)),
                 run_at_startup=True, unique=True),
            # every few seconds, so a slot starts promptly; the slot's row makes it once
            cron(schedules, name=PERIODIC_JOBS[1], second=set(range(0, 60, step)),
                 run_at_startup=True, unique=True),
            cron(housekeeping, name=PERIODIC_JOBS[2], second=0, run_at_startup=True,
                 unique=True),
        ],
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings},
        redis_settings=redis_settings(settings.redis_url),
        queue_name=settings.queue_name,
        job_timeout=JOB_TIMEOUT,
        max_jobs=settings.worker_max_jobs,
        job_completion_wait=settings.shutdown_grace_seconds,
        keep_result=3600,
        handle_signals=True,
        poll_delay=POLL_SECONDS,
        health_check_interval=HEALTH_SECONDS,
        health_check_key=health_key,
    )


def run_worker(settings: Settings, health_key: str | None = None) -> None:
    """Run until SIGTERM/SIGINT. arq's worker dies when Redis goes away (its running
    executions are handed back first); start a new one, with backoff, until Redis is
    back. arq's Worker binds to the current loop when built, hence a loop per attempt."""
    if settings.worker_metrics_port is not None:
        served = prometheus_client.CollectorRegistry(auto_describe=False)
        served.register(METRICS)  # the engine's, with the process's own (CPU, memory)
        served.register(prometheus_client.REGISTRY)
        prometheus_client.start_http_server(settings.worker_metrics_port,
                                            addr=settings.worker_metrics_host, registry=served)
    logging.getLogger("arq.worker").addFilter(QuietPeriodicJobs())
    waits = delays(1.0, 30.0)
    while True:
        asyncio.set_event_loop(asyncio.new_event_loop())
        worker = build_worker(settings, health_key)
        try:
            worker.run()
            return
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            delay = next(waits)
            logger.error("worker lost Redis (%s); starting again in %.0fs", exc, delay)
            _abandon(worker)
            time.sleep(delay)


def _abandon(worker: Worker) -> None:
    """Hand back what still runs on a worker that lost Redis, then close its database
    connections. arq's own close stops at the first Redis error, before its shutdown hook:
    a loop dropped as it is would freeze its executions mid-transaction, their row locks
    held and their step processes unsupervised."""
    loop = worker.loop
    jobs = [task for task in worker.tasks.values() if not task.done()]
    for task in jobs:  # only the jobs: their writers must live on to record the hand-back
        task.cancel()
    loop.run_until_complete(asyncio.gather(*jobs, return_exceptions=True))
    with contextlib.suppress(Exception):
        loop.run_until_complete(shutdown(worker.ctx))
    rest = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in rest:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
    loop.close()
