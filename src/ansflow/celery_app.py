"""Optional Celery entry point (``pip install ansflow[celery]``).

``celery -A ansflow.celery_app worker`` starts a worker; ``execute_pipeline_task`` runs
one execution through ``SyncPipelineExecutor`` (the same engine as the arq path).
Delivery is at least once: ``acks_late`` plus ``reject_on_worker_lost`` make a killed
worker's task come back, and the execution's lease makes a second delivery harmless.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from ansflow.config import get_settings
from ansflow.engine.sync import SyncPipelineExecutor
from ansflow.errors import InfrastructureError

logger = logging.getLogger(__name__)
TASK_NAME = "ansflow.execute_pipeline"


def broker_url() -> str:
    settings = get_settings()
    url = settings.celery_broker_url or settings.redis_url
    if not url:
        raise RuntimeError("set ANSFLOW_CELERY_BROKER_URL or ANSFLOW_REDIS_URL for Celery")
    return url


def make_app() -> Celery:
    settings = get_settings()
    celery = Celery("ansflow", broker=broker_url())
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue_name,
        # a lost task comes back after the visibility timeout (Redis broker)
        broker_transport_options={"visibility_timeout": max(60, int(settings.lease_seconds * 4))},
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
    )
    return celery


app = make_app()


def _execute_pipeline(task: Any, execution_id: int) -> str:
    """Run an execution to its end. A failed pipeline is a normal return; only
    infrastructure errors (database or Redis down) are retried."""
    result = SyncPipelineExecutor(get_settings()).execute(execution_id)
    logger.info("execution %s: %s (ran here: %s)", execution_id, result.status, result.ran)
    return result.status.value


execute_pipeline_task: Any = app.task(
    name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True,
    autoretry_for=(InfrastructureError,), retry_backoff=True, retry_backoff_max=60,
    max_retries=20,
)(_execute_pipeline)
