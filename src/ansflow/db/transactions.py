"""Short transactions of their own, run again when MariaDB picks them as a deadlock
victim: two that upsert rows next to each other (two workers noting themselves for the
first time, two executions entering a new concurrency group) can each hold the gap the
other inserts into, and InnoDB then rolls one back (error 1213). Running the loser again
is what MariaDB's message asks for."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.db.database import Database
from ansflow.errors import InfrastructureError, map_errors
from ansflow.spec.backoff import delays

T = TypeVar("T")
RETRIES = 4


async def transaction(db: Database, work: Callable[[AsyncConnection], Awaitable[T]],
                      what: str) -> T:
    """Run ``work`` in a transaction of its own, up to ``RETRIES`` more times (50 ms, then
    longer) when it fails for the database's sake; the last failure propagates as
    ``InfrastructureError``."""
    waits = itertools.islice(delays(0.05, 0.4), RETRIES)
    while True:
        try:
            with map_errors(what):
                async with db.engine.begin() as conn:
                    return await work(conn)
        except InfrastructureError:
            delay = next(waits, None)
            if delay is None:
                raise
            await asyncio.sleep(delay)
