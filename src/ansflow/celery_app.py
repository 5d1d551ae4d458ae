"""``celery -A ansflow.celery_app worker -Q <ANSFLOW_QUEUE_NAME>``: the documented entry point.

The Celery app and its task live in ``ansflow.queue.celery``; this module only names them
where Celery's command line looks for them.
"""

from ansflow.queue.celery import app, execute_pipeline_task

__all__ = ["app", "execute_pipeline_task"]
