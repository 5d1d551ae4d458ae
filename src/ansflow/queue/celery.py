"""Optional Celery entry point (``pip install ansflow[celery]``).

``celery -A ansflow.celery_app worker -Q <ANSFLOW_QUEUE_NAME>`` starts a worker;
``execute_pipeline_task`` runs one execution through ``SyncPipelineExecutor`` (the same
engine as the arq path). Delivery is at least once: ``acks_late`` plus
``reject_on_worker_lost`` make a killed worker's task come back, and the execution's
lease makes a second delivery harmless. Orphans are also re-dispatched by the API's
sweeper, well before the broker's visibility timeout.
"""

from __future__ import annotations

import logging
from typing import Any

from ansflow.config import get_settings
from ansflow.engine.sync import SyncPipelineExecutor
from ansflow.errors import InfrastructureError
from ansflow.queue.celery_dispatch import TASK_NAME, make_app

logger = logging.getLogger(__name__)

app = make_app(get_settings())


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
