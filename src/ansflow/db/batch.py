"""One transaction's worth of an execution's writes, folded into few statements.

A step queues several small changes (running, log chunks and the log's size, its
verdict). Applied one by one they cost a round trip each; here consecutive step changes
and log appends become one multi-row INSERT of log chunks and one UPDATE per step, with
the outcome of applying them in order: a change after a step's terminal one is refused,
as the guarded UPDATE would refuse it, and a log's size is recorded even on a step that
is already terminal. Any other write is a barrier: what is folded so far runs first.

A transaction that changes what the live events show (a status, log text) is numbered:
its ``seq`` is stored on the rows it changed (``status_seq``, a chunk's ``seq``), so a
follower can catch up from the database with exactly what it missed, and
``committed_events`` gives what to publish once it is committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, insert, literal_column, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ansflow.db.models import StepExecution, StepLog
from ansflow.db.writes import rowcount, update_execution
from ansflow.status import TERMINAL_STEP


@dataclass(frozen=True, slots=True)
class StepChange:
    """Set ``values`` on a step execution unless it is terminal; its result says whether
    it was applied."""

    step_execution_id: int
    values: dict[str, Any]
    step: str = ""


@dataclass(frozen=True, slots=True)
class LogAppend:
    """Store a log chunk at ``offset`` and the log's new size; ``drop`` deletes the chunks
    whose offsets fall in that range (a log's middle, past its limit)."""

    step_execution_id: int
    offset: int
    content: str
    size: int
    drop: tuple[int, int] | None = None
    step: str = ""


@dataclass(frozen=True, slots=True)
class ExecutionChange:
    """Set ``values`` on the execution unless it is terminal; the result says whether.
    ``decide``, when given, may still change ``values`` (in place) as the write is
    applied, after every earlier write of the execution."""

    execution_id: int
    values: dict[str, Any]
    decide: Callable[[dict[str, Any]], None] | None = None


Statement = Callable[[AsyncConnection], Awaitable[Any]]
Write = StepChange | LogAppend | ExecutionChange | Statement

# Built once; the terminal statuses are inlined (no per-call expansion of an IN list)
_UPDATE_STEP = update(StepExecution).where(
    StepExecution.id == bindparam("target_id"),
    StepExecution.status.not_in([literal_column(f"'{s}'") for s in TERMINAL_STEP]))
_LOG_BYTES = update(StepExecution).where(StepExecution.id == bindparam("target_id"))
_INSERT_LOG = insert(StepLog)


@dataclass(slots=True)
class _PendingStep:
    values: dict[str, Any] = field(default_factory=dict)
    changes: list[int] = field(default_factory=list)
    """Indexes of the batch's StepChanges folded into ``values``."""
    log_bytes: int | None = None

    @property
    def terminal(self) -> bool:
        return str(self.values.get("status", "")) in TERMINAL_STEP


class _Fold:
    def __init__(self, conn: AsyncConnection, results: list[Any], seq: int) -> None:
        self.conn = conn
        self.results = results
        self.seq = seq
        self.logs: list[dict[str, Any]] = []
        self.steps: dict[int, _PendingStep] = {}

    def change(self, index: int, write: StepChange) -> None:
        pending = self.steps.setdefault(write.step_execution_id, _PendingStep())
        if pending.terminal:
            self.results[index] = False
            return
        pending.values.update(write.values)
        if "status" in write.values:
            pending.values["status_seq"] = self.seq
        pending.changes.append(index)

    async def append(self, index: int, write: LogAppend) -> None:
        if write.drop is not None:
            await self.insert_logs()  # the chunks it drops may still be queued here
            await self.conn.execute(delete(StepLog).where(
                StepLog.step_execution_id == write.step_execution_id,
                StepLog.offset >= write.drop[0], StepLog.offset < write.drop[1]))
        self.logs.append({"step_execution_id": write.step_execution_id,
                          "offset": write.offset, "size": write.size,
                          "content": write.content, "seq": self.seq})
        pending = self.steps.setdefault(write.step_execution_id, _PendingStep())
        pending.log_bytes = write.offset + write.size
        self.results[index] = True

    async def insert_logs(self) -> None:
        if self.logs:
            await self.conn.execute(_INSERT_LOG, self.logs)
            self.logs = []

    async def flush(self) -> None:
        await self.insert_logs()
        for step_id, pending in self.steps.items():
            applied = False
            if pending.changes:
                values = dict(pending.values)
                if pending.log_bytes is not None:
                    values["log_bytes"] = pending.log_bytes
                result = await self.conn.execute(_UPDATE_STEP, {"target_id": step_id, **values})
                applied = rowcount(result) == 1
                for index in pending.changes:
                    self.results[index] = applied
            if pending.log_bytes is not None and not applied:
                await self.conn.execute(_LOG_BYTES, {"target_id": step_id,
                                                     "log_bytes": pending.log_bytes})
        self.steps = {}


def numbered(write: Write) -> bool:
    """Whether ``write`` changes what live events show (its transaction takes a seq)."""
    if isinstance(write, StepChange | ExecutionChange):
        return "status" in write.values
    return isinstance(write, LogAppend)


async def apply_batch(conn: AsyncConnection, batch: list[Write], seq: int = 0) -> list[Any]:
    """Run ``batch`` on ``conn`` (inside the caller's transaction); a result per write.
    ``seq`` numbers the rows whose events the batch changes."""
    results: list[Any] = [None] * len(batch)
    fold = _Fold(conn, results, seq)
    for index, write in enumerate(batch):
        if isinstance(write, StepChange):
            fold.change(index, write)
        elif isinstance(write, LogAppend):
            await fold.append(index, write)
        else:
            await fold.flush()
            if isinstance(write, ExecutionChange):
                if write.decide is not None:
                    write.decide(write.values)
                values = dict(write.values)
                if "status" in values:
                    values["status_seq"] = seq
                results[index] = await update_execution(conn, write.execution_id, values)
            else:
                results[index] = await write(conn)
    await fold.flush()
    return results


def committed_events(batch: list[Write], results: list[Any]
                     ) -> list[tuple[str, dict[str, Any]]]:
    """What a committed batch changed, as live events in commit order: ``step`` and
    ``execution`` status changes that were applied and every log chunk stored."""
    events: list[tuple[str, dict[str, Any]]] = []
    for write, result in zip(batch, results, strict=True):
        if not result or not numbered(write):
            continue
        if isinstance(write, StepChange):
            values = write.values
            events.append(("step", {"step": write.step, "status": str(values["status"]),
                                    "exit_code": values.get("exit_code"),
                                    "error": values.get("error")}))
        elif isinstance(write, LogAppend):
            events.append(("log", {"step": write.step, "offset": write.offset,
                                   "next_offset": write.offset + write.size,
                                   "content": write.content}))
        elif isinstance(write, ExecutionChange):
            events.append(("execution", {"id": write.execution_id,
                                         "status": str(write.values["status"])}))
    return events
