"""Worker presence: a worker notes itself (labels, slots, steps running) every heartbeat
in the ``worker`` table, and removes itself when it stops. Others read it: the API's
``GET /workers``, and whether a step's labels have a live worker (``waiting_for``)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from datetime import timedelta

from ansflow.db import workers
from ansflow.db.transactions import transaction
from ansflow.errors import AnsFlowError
from ansflow.resources import Resources
from ansflow.status import utcnow

logger = logging.getLogger(__name__)
FORGET_AFTER = timedelta(hours=1)
"""A crashed worker's row is kept this long (listed as not live), then dropped."""


class Presence:
    def __init__(self, resources: Resources, labels: frozenset[str], concurrency: int,
                 running: Callable[[], int]) -> None:
        self.resources = resources
        self.labels = sorted(labels)
        self.concurrency = concurrency
        self.running = running
        self.started_at = utcnow()

    async def beat(self) -> None:
        await transaction(self.resources.db, lambda conn: workers.beat(
            conn, self.resources.worker_id, socket.gethostname(), self.labels,
            self.concurrency, self.running(), self.started_at),
            "noting this worker's heartbeat")

    async def run(self) -> None:
        """Beat every heartbeat until cancelled."""
        while True:
            try:
                await self.beat()
            except AnsFlowError as exc:
                logger.warning("worker presence: %s", exc.message)
            await asyncio.sleep(self.resources.settings.heartbeat_seconds)

    async def remove(self) -> None:
        try:
            await transaction(self.resources.db,
                              lambda conn: workers.remove(conn, self.resources.worker_id),
                              "removing this worker from the worker list")
        except AnsFlowError as exc:
            logger.warning("worker presence: %s", exc.message)


async def forget_lost_workers(resources: Resources) -> int:
    """Housekeeping: drop rows of workers silent for ``FORGET_AFTER``."""
    return await transaction(resources.db,
                             lambda conn: workers.forget(conn, utcnow() - FORGET_AFTER),
                             "forgetting lost workers")
