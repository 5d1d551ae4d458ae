"""Following one execution: catch up from the database, then take batches off the bus.

Every transaction that changes a status or stores log text has the execution's next
commit number (``seq``), stored on the rows it changed. The events of one transaction
share its number, and only the last of them carries it as the SSE ``id``: a client that
resumes from an ``id`` has seen whole transactions, and the catch-up (rows numbered
above it) gives it exactly the rest, each status as it is now and every log chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_

from ansflow.db.models import AtomicStep, PipelineExecution, StepExecution, StepLog
from ansflow.queue.bus import EventBatch
from ansflow.resources import Resources
from ansflow.status import ExecutionStatus

PAGE_ROWS = 200
PAGE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sse:
    """One event as it goes on the wire (``id`` None: the transaction goes on)."""

    event: str
    data: dict[str, Any]
    id: str | None = None


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Which steps' log text a follower wants: none, some (by name) or all."""

    enabled: bool = True
    steps: frozenset[str] = frozenset()

    def wants(self, step: str) -> bool:
        return self.enabled and (not self.steps or step in self.steps)


class _Numbered:
    """Puts the ``id`` on the last event of each transaction (one event of lookahead)."""

    def __init__(self) -> None:
        self._held: tuple[int, str, dict[str, Any]] | None = None

    def push(self, seq: int, event: str, data: dict[str, Any]) -> list[Sse]:
        out = self.flush(next_seq=seq)
        self._held = (seq, event, data)
        return out

    def flush(self, next_seq: int | None = None) -> list[Sse]:
        if self._held is None:
            return []
        seq, event, data = self._held
        self._held = None
        return [Sse(event, data, None if seq == next_seq else str(seq))]


class Follower:
    """The events of one execution after ``after`` (-1: everything, from the start)."""

    def __init__(self, resources: Resources, execution_id: int, after: int,
                 logs: LogFilter) -> None:
        self.resources = resources
        self.execution_id = execution_id
        self.last = after
        self.logs = logs
        self.done = False

    async def changed(self) -> bool:
        """A cheap look: has anything been committed past what we sent?"""
        async with self.resources.db.session() as session:
            seq = await session.scalar(select(PipelineExecution.event_seq)
                                       .where(PipelineExecution.id == self.execution_id))
        return seq is None or int(seq) > self.last

    async def catch_up(self) -> AsyncIterator[Sse]:
        """Everything committed after ``last``, in commit order, from the database."""
        snapshot = await self._snapshot()
        if snapshot is None:  # the execution was deleted
            self.done = True
            yield Sse("end", {"id": self.execution_id, "status": "deleted"})
            return
        upto, status, statuses, names = snapshot
        numbered = _Numbered()
        async for chunk in self._log_chunks(names, upto):
            while statuses and statuses[0][0] < chunk.seq:
                for sse in numbered.push(*statuses.pop(0)):
                    yield sse
            for sse in numbered.push(chunk.seq, "log",
                                     _log_data(names[chunk.step_execution_id], chunk)):
                yield sse
        for seq, event, data in statuses:
            for sse in numbered.push(seq, event, data):
                yield sse
        for sse in numbered.flush():
            yield sse
        self.last = max(self.last, upto)
        if ExecutionStatus(status).terminal:
            self.done = True
            yield Sse("end", {"id": self.execution_id, "status": status})

    async def _log_chunks(self, names: dict[int, str], upto: int) -> AsyncIterator[StepLog]:
        """The wanted steps' chunks numbered in (``last``, ``upto``], page by page (a
        session per page: SQLite has one connection, not to be held while sending)."""
        cursor: tuple[int, int, int] | None = None
        while names:
            chunks, more = await self._chunks(names, cursor, upto)
            for chunk in chunks:
                yield chunk
            if not more:
                return
            cursor = (chunks[-1].seq, chunks[-1].step_execution_id, chunks[-1].offset)

    async def _snapshot(self) -> tuple[int, str, list[tuple[int, str, dict[str, Any]]],
                                       dict[int, str]] | None:
        """The execution's number and status, the status events past ``last`` in order,
        and the step executions whose logs to read (id → step name)."""
        async with self.resources.db.session() as session:
            execution = await session.get(PipelineExecution, self.execution_id)
            if execution is None:
                return None
            rows = (await session.execute(
                select(AtomicStep.name, StepExecution)
                .join(StepExecution, StepExecution.atomic_step_id == AtomicStep.id)
                .where(StepExecution.pipeline_execution_id == execution.id)
                .order_by(AtomicStep.id))).all()
            statuses: list[tuple[int, str, dict[str, Any]]] = [
                (row.status_seq, "step", {"step": name, "status": row.status,
                                          "exit_code": row.exit_code, "error": row.error})
                for name, row in rows if row.status_seq > self.last]
            if execution.status_seq > self.last:
                statuses.append((execution.status_seq, "execution",
                                 {"id": execution.id, "status": execution.status}))
            statuses.sort(key=lambda s: s[0])
            names = {row.id: name for name, row in rows if self.logs.wants(name)}
            return execution.event_seq, execution.status, statuses, names

    async def _chunks(self, names: dict[int, str], cursor: tuple[int, int, int] | None,
                      upto: int) -> tuple[Sequence[StepLog], bool]:
        """A page of log chunks after ``cursor`` (seq, step execution, offset) up to
        ``upto``, at most ``PAGE_ROWS`` rows or about ``PAGE_BYTES``; and whether more
        may follow."""
        query = select(StepLog).where(StepLog.step_execution_id.in_(list(names)),
                                      StepLog.seq > self.last, StepLog.seq <= upto)
        if cursor is not None:
            query = query.where(tuple_(StepLog.seq, StepLog.step_execution_id, StepLog.offset)
                                > tuple_(*cursor))
        async with self.resources.db.session() as session:
            rows = (await session.scalars(
                query.order_by(StepLog.seq, StepLog.step_execution_id, StepLog.offset)
                .limit(PAGE_ROWS))).all()
        page: list[StepLog] = []
        size = 0
        for row in rows:
            if page and size + row.size > PAGE_BYTES:
                break
            page.append(row)
            size += row.size
        return page, len(rows) == PAGE_ROWS or len(page) < len(rows)

    def live(self, batch: EventBatch) -> list[Sse] | None:
        """The events of a batch from the bus; None when batches were missed before it
        (the caller catches up instead)."""
        if batch.seq <= self.last:
            return []
        if batch.seq > self.last + 1:
            return None
        self.last = batch.seq
        numbered = _Numbered()
        out: list[Sse] = []
        at = {"at": batch.at}
        for event, data in batch.events:
            if event == "log" and not self.logs.wants(str(data.get("step"))):
                continue
            out += numbered.push(batch.seq, event, {**data, **at})
        out += numbered.flush()
        for event, data in batch.events:
            if event == "execution" and ExecutionStatus(data["status"]).terminal:
                self.done = True
                out.append(Sse("end", {"id": self.execution_id, "status": data["status"]}))
        return out


def _log_data(step: str, chunk: StepLog) -> dict[str, Any]:
    return {"step": step, "offset": chunk.offset, "next_offset": chunk.offset + chunk.size,
            "content": chunk.content}
