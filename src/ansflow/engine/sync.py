"""Synchronous facades for thread-based and Celery-style workers.

They own an event loop (``asyncio.Runner``) and open ``Resources`` inside it, then run
the very same ``PipelineExecutor`` as the async path. Each call gets its own loop and
its own database engine, so any number of threads may call at once.
"""

from __future__ import annotations

import asyncio

from ansflow.config import Settings
from ansflow.engine.executor import ExecutionResult, PipelineExecutor
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
    through ``PipelineExecutor.run_step``: conditions are the caller's business;
    attempts, retries, timeouts, the heartbeat and recording are not."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def run(self, execution_id: int, step_name: str) -> StepStatus:
        with asyncio.Runner() as runner:
            return runner.run(self._run(execution_id, step_name))

    async def _run(self, execution_id: int, step_name: str) -> StepStatus:
        async with Resources.open(self._settings) as resources:
            return await PipelineExecutor(resources).run_step(execution_id, step_name)
