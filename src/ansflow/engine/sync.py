"""Synchronous facades for thread-based and Celery-style workers.

They own an event loop (``asyncio.Runner``) and open ``Resources`` inside it, then run
the very same ``PipelineExecutor`` / ``StepExecutor`` as the async path. Each call gets
its own loop and its own database engine, so any number of threads may call at once.
"""

from __future__ import annotations

import asyncio

from ansflow.config import Settings
from ansflow.db.store import Store
from ansflow.engine.executor import ExecutionResult, PipelineExecutor
from ansflow.engine.loader import load_execution
from ansflow.engine.recorder import DbRecorder
from ansflow.engine.step_executor import StepExecutor
from ansflow.errors import Conflict
from ansflow.resources import Resources
from ansflow.status import StepStatus


class SyncPipelineExecutor:
    """Run one execution from synchronous code. Same engine, own event loop."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def execute(self, execution_id: int) -> ExecutionResult:
        with asyncio.Runner() as runner:
            return runner.run(self._execute(execution_id))

    async def _execute(self, execution_id: int) -> ExecutionResult:
        async with Resources.open(self._settings) as resources:  # engine born in this loop
            return await PipelineExecutor(resources).execute(execution_id)


class SyncStepExecutor:
    """Run one step of an execution from sync code, holding the execution's lease under
    ``settings.worker_id`` (set it, so that successive calls are the same worker),
    through the same ``StepExecutor``: conditions are the caller's business, attempts,
    retries, timeouts and recording are not."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def run(self, execution_id: int, step_name: str) -> StepStatus:
        with asyncio.Runner() as runner:
            return runner.run(self._run(execution_id, step_name))

    async def _run(self, execution_id: int, step_name: str) -> StepStatus:
        settings = self._settings
        async with Resources.open(settings) as resources:
            async with resources.db.session() as session:
                store = Store(session)
                if not await store.claim(execution_id, resources.worker_id,
                                         settings.lease_seconds):
                    raise Conflict(f"execution {execution_id} is held by another worker")
                await session.commit()
                state, _ = await load_execution(store, execution_id, settings)
            if step_name not in state.steps:
                raise Conflict(f"execution {execution_id} has no step named {step_name!r}")
            step = state.steps[step_name]
            if step.status.terminal:
                return step.status
            state.workspace.mkdir(parents=True, exist_ok=True)
            recorder = DbRecorder(resources.db, execution_id, resources.worker_id,
                                  settings.lease_seconds, bus=resources.bus)
            executor = StepExecutor(recorder, state, kill_grace=settings.kill_grace_seconds,
                                    log_limit=settings.log_limit_bytes,
                                    public_url=settings.public_url,
                                    deny_private_targets=settings.notify_deny_private)
            try:
                return await executor.run(step)
            finally:
                await recorder.close()
