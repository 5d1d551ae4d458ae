"""Dispatch executions to Celery workers (``ANSFLOW_EXECUTION_BACKEND=celery``)."""

from __future__ import annotations

import asyncio

from ansflow.config import Settings
from ansflow.dispatch import job_id
from ansflow.errors import InfrastructureError


class CeleryDispatcher:
    name = "celery"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def dispatch(self, execution_id: int, *, resume: bool = False) -> None:
        from ansflow.celery_app import execute_pipeline_task

        try:
            # kombu publishes synchronously; keep the loop free
            await asyncio.to_thread(execute_pipeline_task.apply_async, args=[execution_id],
                                    task_id=job_id(execution_id, resume))
        except OSError as exc:
            raise InfrastructureError(f"queueing execution {execution_id}: the Celery broker "
                                      f"is unavailable ({exc})") from exc

    async def ping(self) -> None:
        from ansflow.celery_app import app

        def check() -> None:
            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)

        try:
            await asyncio.to_thread(check)
        except OSError as exc:
            raise InfrastructureError(f"the Celery broker is unavailable ({exc})") from exc
