"""Worker presence in the ``worker`` table: workers that start together all get a row."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

from ansflow.db import workers
from ansflow.queue.presence import Presence
from ansflow.resources import Resources

STARTING = 12
ROUNDS = 3


async def test_workers_starting_together_all_note_themselves(resources: Resources) -> None:
    """Their first beats insert next to each other in one gap of the primary key, and
    MariaDB rolls some back as deadlock victims: that used to end a worker's start
    ("Deadlock found when trying to get lock")."""
    prefix = f"together-{uuid.uuid4().hex[:6]}"
    for round_ in range(ROUNDS):
        presences = [Presence(dataclasses.replace(resources, worker_id=f"{prefix}-{round_}-{n}"),
                              frozenset({"gpu"}), 4, lambda: 0) for n in range(STARTING)]
        await asyncio.gather(*(p.beat() for p in presences))
    async with resources.db.session() as session:
        noted = {w.id for w in await workers.workers(session) if w.id.startswith(prefix)}
    assert len(noted) == ROUNDS * STARTING
