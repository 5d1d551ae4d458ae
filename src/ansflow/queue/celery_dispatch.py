"""Dispatch executions to Celery workers (``ANSFLOW_EXECUTION_BACKEND=celery``)."""

from __future__ import annotations

import asyncio

from celery import Celery
from kombu.exceptions import KombuError

from ansflow.config import Settings
from ansflow.errors import InfrastructureError
from ansflow.queue.dispatch import job_id

TASK_NAME = "ansflow.execute_pipeline"


def make_app(settings: Settings) -> Celery:
    url = settings.celery_broker_url or settings.redis_url
    if not url:
        raise InfrastructureError("the Celery backend needs ANSFLOW_CELERY_BROKER_URL or "
                                  "ANSFLOW_REDIS_URL")
    celery = Celery("ansflow", broker=url)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue_name,
        # a lost task comes back after the visibility timeout (Redis broker); the sweeper
        # usually re-dispatches it much sooner
        broker_transport_options={"visibility_timeout": 3600},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    return celery


class CeleryDispatcher:
    """Sends ``execute_pipeline_task`` by name through a Celery app of its own, built from
    the given settings (the worker's ``ansflow.celery_app`` reads the environment)."""

    name = "celery"

    def __init__(self, settings: Settings) -> None:
        self._app: Celery = make_app(settings)
        self._queue = settings.queue_name

    async def dispatch(self, execution_id: int, *, resume: bool = False,
                       wake: str | None = None) -> None:
        try:
            # kombu publishes synchronously; keep the loop free
            await asyncio.to_thread(self._app.send_task, TASK_NAME, args=[execution_id],
                                    task_id=job_id(self._queue, execution_id, resume, wake),
                                    queue=self._queue)
        except (OSError, KombuError) as exc:
            raise InfrastructureError(f"queueing execution {execution_id}: the Celery broker "
                                      f"is unavailable ({exc})") from exc

    async def ping(self) -> None:
        def check() -> None:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)

        try:
            await asyncio.to_thread(check)
        except (OSError, KombuError) as exc:
            raise InfrastructureError(f"the Celery broker is unavailable ({exc})") from exc

    def close(self) -> None:
        self._app.close()
