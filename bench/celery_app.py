"""The Celery + Redis baseline: one task that runs a step's command and returns its exit
code. Broker and result backend are Redis db 0; the queue (and its exchange) is the
session's own, from BENCH_CELERY_QUEUE."""

from __future__ import annotations

import os
import subprocess

from celery import Celery
from kombu import Exchange, Queue

REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "ansflow-bench-celery")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_queues=[Queue(QUEUE, Exchange(QUEUE), routing_key=QUEUE)],
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=3600,
    # no pidbox / event keys shared with other Celery users of this Redis
    worker_enable_remote_control=False,
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.run_step")  # type: ignore[untyped-decorator]
def run_step(command: str) -> int:
    return subprocess.run(["sh", "-c", command], check=False).returncode
