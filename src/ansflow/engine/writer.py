"""Group commit for one execution's writes.

Writes are queued and a single writer task commits everything queued so far in one
transaction, first renewing (and so checking) the execution's lease; step changes and
log chunks in a batch are folded into few statements (``ansflow.db.batch``). While one
batch commits, the next one gathers, so concurrent steps share transactions without any
added delay. A caller awaiting a write resumes only after its transaction committed.

A batch that changes what live events show takes the execution's next commit number
(``event_seq``, advanced by the fence's own UPDATE) and, once committed, is handed to
``publish`` with the events it made: the one place the engine's changes are published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.db import writes
from ansflow.db.batch import LogAppend, Write, apply_batch, committed_events, numbered
from ansflow.db.database import Database
from ansflow.engine.metrics import FENCED_WRITES
from ansflow.errors import AnsFlowError, InfrastructureError, LeaseLost, map_errors
from ansflow.queue.bus import EventBatch
from ansflow.spec.backoff import delays

Publish = Callable[[EventBatch], None]
Fence = Callable[[AsyncConnection, int, list[Write]], Awaitable[bool]]
"""Renews the lease of the batch's writes inside its transaction and advances the
execution's ``event_seq`` by the given amount; False when a lease is lost."""

OUTAGE_LEASES = 10

logger = logging.getLogger(__name__)


class WriteRefused(AnsFlowError):
    """The database refused one write (its data, not an outage); the others went on."""

    code, status_code = "write_refused", 500


class LogWriteRefused(WriteRefused):
    """A chunk of a step's log could not be stored."""


class BatchWriter:
    """Commits queued writes of one execution in batches, fenced by its lease."""

    def __init__(self, db: Database, execution_id: int, worker_id: str,
                 lease_seconds: float, publish: Publish | None = None,
                 fence: Fence | None = None, per_write: bool = False) -> None:
        self._db = db
        self._publish = publish
        self._fence = fence or (lambda conn, bump, _batch: writes.fence(
            conn, execution_id, worker_id, lease_seconds, bump))
        self._per_write = per_write
        """The writes of a batch hold leases of their own (steps handed to this worker):
        a batch the fence refuses is committed write by write, and only the writes whose
        lease is lost fail (``LeaseLost``); the writer goes on."""
        self._seq: int | None = None
        """The execution's ``event_seq`` as of our last commit (read once, then kept:
        while we hold the lease nobody else advances it, unless ``shared_seq``)."""
        self.shared_seq = fence is not None
        """Other workers also number this execution's commits (they run some of its
        steps): read ``event_seq`` in every transaction instead of keeping it."""
        self._execution_id = execution_id
        self._worker_id = worker_id
        self._lease_seconds = lease_seconds
        self._queue: list[tuple[Write, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self.lease_lost = False
        self.failure: AnsFlowError | None = None
        """Set when a batch could not be committed: nothing later may be recorded."""
        self.refused_log: tuple[int, str] | None = None
        """The first log chunk the database refused: (step execution id, why). Set before
        any later write is applied, so a later write may depend on it."""

    def submit(self, write: Write) -> asyncio.Future[Any]:
        """Queue ``write``; the future resolves with its result after the commit. Its
        error is marked retrieved, so a caller may queue without awaiting."""
        if self.lease_lost:
            raise LeaseLost(f"execution {self._execution_id}: lease lost")
        if self.failure is not None:
            raise self.failure
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._queue.append((write, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"writer-{self._execution_id}")
        return future

    async def write(self, write: Write) -> Any:
        # shielded: a cancelled caller must not cut the transaction it is part of
        return await asyncio.shield(self.submit(write))

    async def _run(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            writes_ = [w for w, _ in batch]
            try:
                results, seq = await self._commit(writes_)
            except LeaseLost as exc:
                if not await self._lease_lost(batch, exc):
                    return
                continue
            except AnsFlowError as exc:
                self._fail(batch, exc)
                return
            except sqlalchemy.exc.StatementError:
                # one write's data was refused (a character the column cannot hold, a value
                # out of range): find it, and let the others through, in order
                if not await self._one_by_one(batch):
                    return
                continue
            self._announce(writes_, results, seq)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _lease_lost(self, batch: list[tuple[Write, asyncio.Future[Any]]],
                          exc: LeaseLost) -> bool:
        """A fence refused the batch: whether later writes may still go through (with
        ``per_write``, the writes whose lease holds are committed one by one)."""
        if not self._per_write:
            self._fail(batch, exc)
            return False
        if len(batch) == 1:
            batch[0][1].set_exception(exc)
            return True
        return await self._one_by_one(batch)

    def _announce(self, batch: list[Write], results: list[Any], seq: int | None) -> None:
        """Publish what a committed transaction numbered ``seq`` changed."""
        if seq is not None and self._publish is not None:
            self._publish(EventBatch(self._execution_id, seq,
                                     tuple(committed_events(batch, results))))

    def _fail(self, batch: list[tuple[Write, asyncio.Future[Any]]], exc: AnsFlowError) -> None:
        # later writes may depend on these (FIFO), so none of them may proceed
        self.failure = exc
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)
        self._fail_queue(exc)

    async def _one_by_one(self, batch: list[tuple[Write, asyncio.Future[Any]]]) -> bool:
        """Each write of a refused batch in its own transaction; False when one failed for
        a reason that stops every later write (an outage, the lost lease of the writer;
        with ``per_write`` a lost lease fails only its own writes)."""
        for index, (write, future) in enumerate(batch):
            try:
                [result], seq = await self._commit([write])
            except LeaseLost as exc:
                if not self._per_write:
                    self._fail(batch[index:], exc)
                    return False
                future.set_exception(exc)
            except AnsFlowError as exc:
                self._fail(batch[index:], exc)
                return False
            except sqlalchemy.exc.StatementError as exc:
                future.set_exception(self._refused(write, exc))
            else:
                self._announce([write], [result], seq)
                future.set_result(result)
        return True

    def _refused(self, write: Write, exc: sqlalchemy.exc.StatementError) -> WriteRefused:
        why = str(exc.orig if exc.orig is not None else exc).splitlines()[0][:300]
        logger.error("execution %s: the database refused a write: %s", self._execution_id, why)
        if isinstance(write, LogAppend):
            message = (f"storing {write.size} bytes of log at offset {write.offset} "
                       f"failed: {why}")
            if self.refused_log is None:
                self.refused_log = (write.step_execution_id, message)
            return LogWriteRefused(message)
        return WriteRefused(f"recording a change failed: {why}")

    async def _commit(self, batch: list[Write]) -> tuple[list[Any], int | None]:
        """One transaction for the batch. A database that went away (a restart, a failover)
        is retried with backoff for as long as an outage may last (``OUTAGE_LEASES``
        leases, at least a minute): giving up sooner would throw away steps that finished
        during the outage and make them run again. If another worker took the execution
        meanwhile, the fence says so and nothing is written."""
        deadline = time.monotonic() + max(self._lease_seconds * OUTAGE_LEASES, 60.0)
        waits = delays(0.1, 1.0)
        while True:
            try:
                return await self._transaction(batch)
            except InfrastructureError as exc:
                delay = next(waits)
                self._seq = None  # the commit may have happened after all: read it again
                if isinstance(exc, LeaseLost) or time.monotonic() + delay > deadline:
                    raise
                logger.warning("execution %s: %s; retrying in %.1fs", self._execution_id,
                               exc.message, delay)
                await asyncio.sleep(delay)

    async def _transaction(self, batch: list[Write]) -> tuple[list[Any], int | None]:
        bump = 1 if any(numbered(w) for w in batch) else 0
        with map_errors(f"recording execution {self._execution_id}"):
            async with self._db.engine.begin() as conn:
                if self.shared_seq:
                    self._seq = None
                if not await self._fence(conn, bump, batch):
                    await conn.rollback()
                    FENCED_WRITES.inc(len(batch))
                    self.lease_lost = not self._per_write
                    raise LeaseLost(f"execution {self._execution_id} is now held by another "
                                    "worker")
                base = self._seq
                if base is None:
                    base = await writes.event_seq(conn, self._execution_id) - bump
                results = await apply_batch(conn, batch, base + bump)
        self._seq = base + bump
        return results, (self._seq if bump else None)

    def _fail_queue(self, exc: BaseException) -> None:
        queued, self._queue = self._queue, []
        for _, future in queued:
            if not future.done():
                future.set_exception(exc)

    async def close(self) -> None:
        """Wait for queued writes to finish (their errors belong to their callers)."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
