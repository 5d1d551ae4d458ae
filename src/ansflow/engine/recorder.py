"""The engine's only way to storage: every change is committed, then published.

The engine is typed on ``Recorder``; ``DbRecorder`` is the one implementation, and
``DbRecorder.claim`` the one way in (take the lease, load the execution). It fences
every write with the execution's lease: each transaction first renews the lease, and if
another worker took the execution over, it is rolled back and ``LeaseLost`` is raised
so this worker stops and kills its processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from ansflow.config import Settings
from ansflow.db import artifacts, dispatch, groups, parking, writes
from ansflow.db.batch import ExecutionChange, LogAppend, StepChange, Write
from ansflow.db.database import Database
from ansflow.db.dispatch import StepState as StepState  # the engine reads it here
from ansflow.db.models import PipelineExecution
from ansflow.db.store import Store
from ansflow.db.transactions import transaction
from ansflow.db.trust import TrustStore
from ansflow.engine.loader import ExecutionOptions, build_execution
from ansflow.engine.process import LinePiece
from ansflow.engine.runtime import ExecutionState
from ansflow.engine.writer import BatchWriter, LogWriteRefused
from ansflow.errors import map_errors
from ansflow.queue.bus import EventBus
from ansflow.resources import Resources
from ansflow.spec.concurrency import RECHECK, Entry, describe, execution_group
from ansflow.status import ExecutionStatus
from ansflow.trust.masking import Masker

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """A committed change: ``kind`` is ``execution``, ``step`` or ``log``."""

    kind: str
    execution_id: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat learned."""

    cancel_requested: bool
    decided: dict[int, dict[str, Any]]
    """Decisions taken on waiting steps, by step execution id."""
    preempted: dict[int, str]
    """Steps holding a concurrency group that must stop, and why."""


class Listener(Protocol):
    """Told about every change after it is committed (progress displays, SSE fan-out).
    Called in the engine's loop; must not block and should not raise."""

    def __call__(self, event: Event) -> None: ...


class Recorder(Protocol):
    """Where the engine records one claimed execution.

    Who calls: the scheduler and the step executors of one execution, concurrently, in
    one event loop. Every write first renews the lease and raises ``LeaseLost`` once
    another worker holds the execution; after that nothing more is written. Writes of
    one execution commit in the order they were made (FIFO), so a queued write
    (``wait=False``) commits no later than any write made after it. A step change to a
    terminal step is not applied: a terminal status is final.
    """

    @property
    def lease_lost(self) -> bool: ...

    async def execution_changed(self, **values: Any) -> None:
        """Set ``values`` on the execution unless it is terminal; returns once committed."""
        ...

    async def step_changed(self, step_execution_id: int, step: str, *, wait: bool = True,
                           **values: Any) -> None: ...

    async def execution_finished(self, status: ExecutionStatus, error: str | None,
                                 **values: Any) -> ExecutionStatus:
        """Record the verdict (``error`` instead when a log chunk was refused); returns the
        status recorded."""
        ...

    def log_chunk(self, step_execution_id: int, step: str, offset: int, content: str,
                  size: int, drop: tuple[int, int] | None) -> asyncio.Future[Any]:
        """Queue a chunk; the future resolves once it is committed."""
        ...

    async def artifacts_kept(self, step: str, rows: list[dict[str, Any]]) -> None:
        """Record the artifacts a step kept in the workspace store."""
        ...

    async def release(self) -> None:
        """Give the execution up (worker shutdown); it may be resumed elsewhere at once."""
        ...

    async def heartbeat(self, waiting: Sequence[int] = (), holding: Sequence[int] = ()
                        ) -> Beat:
        """Renew the lease and learn what changed outside: a cancel request, decisions on
        the ``waiting`` steps, a stop asked of the ``holding`` steps (their concurrency
        group's newcomer cancels in progress). Called every ``settings.heartbeat_seconds``
        while the execution runs (more often while steps wait for a decision)."""
        ...

    async def claim_decision(self, step_execution_id: int, decision: dict[str, Any]
                             ) -> dict[str, Any]:
        """Fill a waiting step's decision slot unless someone did first; the decision in
        it (``db/parking.py``)."""
        ...

    async def park(self, waiting: Sequence[int], wake_at: datetime | None) -> bool:
        """Give the execution up until ``wake_at`` or a decision on a ``waiting`` step:
        nothing may be written afterwards. False, and still held, when a decision came
        meanwhile."""
        ...

    async def enter_group(self, name: str, step_execution_id: int, *,
                          cancel_in_progress: bool) -> Entry:
        """Take concurrency group ``name`` for a step, or wait for it, or learn that a
        newer member superseded the step (``db/groups.py``)."""
        ...

    async def leave_group(self, name: str, step_execution_id: int | None) -> int | None:
        """Let the group go (held by a step, or by the execution for None); the waiting
        execution to wake, if any."""
        ...

    async def close(self) -> None:
        """Wait for queued writes. Called once, when the execution leaves this worker."""
        ...

    def share_sequence(self) -> None:
        """Other workers write some of the execution's steps from now on (they number
        their commits too)."""
        ...

    async def step_states(self, step_execution_ids: list[int]) -> dict[int, StepState]:
        """The committed state of these steps (those other workers run)."""
        ...


@dataclass(frozen=True, slots=True)
class Claimed:
    """This worker holds the execution's lease: run ``state``, record through ``recorder``."""

    recorder: Recorder
    state: ExecutionState
    options: ExecutionOptions
    group: str | None = None
    """The execution's own concurrency group, which it holds: ``leave_group`` at its end."""
    wake: list[int] = field(default_factory=list)
    """Parked executions whose fate changed as this one entered its group."""


@dataclass(frozen=True, slots=True)
class NotClaimed:
    """The execution ended, another worker holds a live lease on it, or it waits for its
    concurrency group (parked; a newer one may have superseded it)."""

    status: ExecutionStatus
    holder: str | None
    wake: list[int] = field(default_factory=list)


class DbRecorder:
    """Writes execution and step changes for one execution held under a lease.

    Writes go through a ``BatchWriter`` (group commit); each awaited change returns after
    its transaction committed, and only then is it published to listeners (in this
    process) and, batch by batch, on ``bus`` (live events for every API process).
    """

    def __init__(self, db: Database, execution_id: int, worker_id: str, lease_seconds: float,
                 listeners: list[Listener] | None = None, bus: EventBus | None = None,
                 writer: BatchWriter | None = None) -> None:
        """``writer``: one shared with other recorders of the execution (else its own)."""
        self.execution_id = execution_id
        self.listeners = listeners or []
        self._db = db
        self._writer = writer or BatchWriter(db, execution_id, worker_id, lease_seconds,
                                             bus.publish if bus is not None else None)
        self._step_names: dict[int, str] = {}

    @classmethod
    async def claim(cls, resources: Resources, execution_id: int,
                    listeners: list[Listener] | None = None) -> Claimed | NotClaimed:
        """Take the execution's lease for ``resources.worker_id`` and load it. Safe to call
        for the same id from many workers at once: one of them gets ``Claimed``. An
        execution with a concurrency group is claimed in the transaction that takes the
        group (the group's row is locked before any execution's)."""
        settings, worker = resources.settings, resources.worker_id
        what = f"claiming execution {execution_id}"
        with map_errors(what):
            async with resources.db.session() as session:
                execution = await Store(session).get_execution(execution_id)
                group = (None if ExecutionStatus(execution.status).terminal
                         else execution_group(execution.options, execution.trigger))
                was_parked = execution.parked_at is not None
        wake: list[int] = []
        if group is None:
            with map_errors(what):
                async with resources.db.session() as session:
                    claimed = await Store(session).claim(execution_id, worker,
                                                         settings.lease_seconds)
                    await session.commit()
        else:
            name, cancel_in_progress = group
            entry, claimed = await transaction(resources.db, lambda conn: groups.claim(
                conn, execution_id, worker, settings.lease_seconds, name,
                cancel_in_progress=cancel_in_progress, recheck=RECHECK), what)
            wake = entry.wake
            if entry.outcome != "hold":
                logger.info("execution %s: %s in concurrency group %r (%s)", execution_id,
                            "waits" if entry.outcome == "wait" else "superseded", name,
                            entry.other and describe(entry.other))
        with map_errors(what):
            async with resources.db.session() as session:
                store = Store(session)
                execution = await store.get_execution(execution_id)
                if not claimed:
                    return NotClaimed(ExecutionStatus(execution.status), execution.worker_id,
                                      wake)
                state, options = await load_execution(session, execution, settings,
                                                      was_parked=was_parked)
        state.worker_id = worker
        recorder = cls(resources.db, execution_id, worker, settings.lease_seconds, listeners,
                       resources.bus)
        return Claimed(recorder, state, options, group and group[0], wake)

    @property
    def lease_lost(self) -> bool:
        return self._writer.lease_lost

    async def execution_changed(self, **values: Any) -> None:
        await self._writer.write(ExecutionChange(self.execution_id, values))
        self.publish(Event("execution", self.execution_id, _public(values)))

    async def execution_finished(self, status: ExecutionStatus, error: str | None,
                                 **values: Any) -> ExecutionStatus:
        """Record the verdict, or ``error`` if the database refused a chunk of any step's
        log: decided when the write is applied, after every earlier write of the
        execution (the writer is FIFO), so a refused last chunk is not missed either."""
        # without an error of its own, the reason a canceller recorded is kept
        final: dict[str, Any] = {**values, "status": status,
                                 **({"error": error} if error is not None else {})}

        def decide(current: dict[str, Any]) -> None:
            if (refused := self._writer.refused_log) is not None and error is None:
                step_id, why = refused
                current.update(status=ExecutionStatus.ERROR, error=(
                    f"the log of step {self._step_names.get(step_id, step_id)!r} could not "
                    f"be stored: {why}"))

        await self._writer.write(ExecutionChange(self.execution_id, final, decide))
        self.publish(Event("execution", self.execution_id, _public(final)))
        return ExecutionStatus(final["status"])

    async def step_changed(self, step_execution_id: int, step: str, *, wait: bool = True,
                           **values: Any) -> None:
        """Write a step change (nothing if the step is already terminal). ``wait=False``
        only queues it: later writes of this execution commit after it (FIFO), listeners
        hear of it once it is committed, and a failure stops every later write."""
        future = self._submit(StepChange(step_execution_id, values, step))
        event = Event("step", self.execution_id, {"step": step, **_public(values)})
        future.add_done_callback(lambda f: self._published(f, event))
        if wait:
            await asyncio.shield(future)

    def log_chunk(self, step_execution_id: int, step: str, offset: int, content: str,
                  size: int, drop: tuple[int, int] | None) -> asyncio.Future[Any]:
        """Queue a chunk; the future resolves once it is committed (``LogWriteRefused`` if
        the database refused it). A later awaited write of this execution commits after
        it (the queue is FIFO), which is all most callers need."""
        self._step_names[step_execution_id] = step
        future = self._submit(LogAppend(step_execution_id, offset, content, size, drop, step))
        event = Event("log", self.execution_id, {"step": step, "offset": offset,
                                                 "content": content})
        future.add_done_callback(lambda f: self._published(f, event))
        return future

    def _submit(self, write: Write) -> asyncio.Future[Any]:
        return self._writer.submit(write)

    def _published(self, future: asyncio.Future[Any], event: Event) -> None:
        # update_step answers False when the step was already terminal: nothing to tell
        if not future.cancelled() and future.exception() is None and future.result():
            self.publish(event)

    async def artifacts_kept(self, step: str, rows: list[dict[str, Any]]) -> None:
        """Record the artifacts of a step (replacing those of an earlier run of it)."""
        await self._writer.write(
            lambda c: artifacts.replace_artifacts(c, self.execution_id, step, rows))

    async def release(self) -> None:
        """Give the execution up so another worker can resume it at once."""
        await self._writer.write(lambda c: writes.release(c, self.execution_id))
        self._writer.lease_lost = True

    async def heartbeat(self, waiting: Sequence[int] = (), holding: Sequence[int] = ()
                        ) -> Beat:
        """Renew the lease, and learn what changed outside: a cancel request, ``waiting``
        steps that someone decided, ``holding`` steps (of concurrency groups) that a
        newcomer asked to stop."""
        async def beat(conn: Any) -> Beat:
            return Beat(await writes.cancel_requested(conn, self.execution_id),
                        await parking.decided(conn, waiting),
                        await groups.preempted(conn, list(holding)))

        result: Beat = await self._writer.write(beat)
        return result

    async def claim_decision(self, step_execution_id: int, decision: dict[str, Any]
                             ) -> dict[str, Any]:
        """Decide a waiting step unless someone did first; the decision taken."""
        taken: dict[str, Any] = await self._writer.write(
            lambda c: parking.claim_decision(c, step_execution_id, decision))
        return taken

    async def park(self, waiting: Sequence[int], wake_at: datetime | None) -> bool:
        """Give the execution up until ``wake_at`` or a decision (nothing may be written
        afterwards); False, and still held, when a ``waiting`` step was decided meanwhile."""
        parked = bool(await self._writer.write(
            lambda c: parking.park(c, self.execution_id, waiting, wake_at)))
        if parked:
            self._writer.lease_lost = True
        return parked

    async def enter_group(self, name: str, step_execution_id: int, *,
                          cancel_in_progress: bool) -> Entry:
        # a transaction of its own: the group's row is locked before any execution's,
        # which a fenced write (it renews the execution's lease first) would not do
        return await transaction(self._db, lambda conn: groups.enter(
            conn, name, (self.execution_id, step_execution_id),
            cancel_in_progress=cancel_in_progress), f"entering concurrency group {name!r}")

    async def leave_group(self, name: str, step_execution_id: int | None) -> int | None:
        return await transaction(self._db, lambda conn: groups.leave(
            conn, name, (self.execution_id, step_execution_id)),
            f"leaving concurrency group {name!r}")

    async def close(self) -> None:
        await self._writer.close()

    def share_sequence(self) -> None:
        self._writer.shared_seq = True

    async def step_states(self, step_execution_ids: list[int]) -> dict[int, StepState]:
        with map_errors(f"reading steps of execution {self.execution_id}"):
            async with self._db.engine.connect() as conn:
                return await dispatch.step_states(conn, step_execution_ids)

    def publish(self, event: Event) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a display must never break an execution
                logger.exception("execution %s: listener failed", self.execution_id)


async def load_execution(session: AsyncSession, execution: PipelineExecution,
                         settings: Settings, *, was_parked: bool = False
                         ) -> tuple[ExecutionState, ExecutionOptions]:
    """The in-memory state of a stored execution: its steps and the secrets it sees
    (``was_parked``: see ``build_execution``)."""
    rows = await Store(session).step_rows(execution)
    secrets = await TrustStore(session).visible_secrets(execution.pipeline_id)
    return await build_execution(execution, rows, secrets, settings, was_parked=was_parked)


def _public(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}


class StepLogSink:
    """The line sink of one step: masks, batches lines into chunks, enforces the limit.

    The log keeps its first ``limit/2`` bytes and its latest ``limit/2`` bytes; a reader
    shows one marker line where the middle was dropped. While the head fills, lines are
    committed in chunks of up to ``CHUNK_BYTES`` or after ``FLUSH_DELAY`` seconds (a tail
    sees output within a fraction of a second; a flood costs one transaction per chunk,
    and waiting for it bounds memory). Past the head, only the latest ``limit/2`` bytes
    are kept in memory and written every ``TAIL_FLUSH_DELAY`` seconds, replacing the
    previous tail: a flood of output then costs about one transaction a second.
    """

    CHUNK_BYTES = 64 * 1024
    FLUSH_DELAY = 0.1
    TAIL_FLUSH_DELAY = 1.0

    def __init__(self, recorder: Recorder, step_execution_id: int, step: str, limit: int,
                 start_offset: int = 0, mask: Masker | None = None) -> None:
        self._recorder = recorder
        self._id = step_execution_id
        self._step = step
        self._head_budget = limit // 2
        self._tail_budget = limit - self._head_budget
        self._emitted = start_offset
        """Bytes the step has written so far, kept or not: the offset of the next byte."""
        self._head_end: int | None = None
        self._mask = mask
        self.refused: str | None = None
        """Why the database refused a chunk of this log, once it did (the step fails)."""
        self._carry = ""
        """The end of a cut line (``LinePiece``) held back until the line goes on: a secret
        the cut splits is masked whole."""
        self._buffer: deque[tuple[str, int]] = deque()
        self._buffered = 0
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    @property
    def _in_tail(self) -> bool:
        return self._head_end is not None

    async def write(self, line: str) -> None:
        await self.write_lines([line])

    async def write_lines(self, lines: list[str]) -> None:
        """Many lines at once, kept as one block (a flood costs per block, not per line)."""
        if self._mask:
            lines = self._masked(lines)
        if not lines:
            return
        self._append("\n".join(lines) + "\n")
        await self._added()

    def _masked(self, lines: list[str]) -> list[str]:
        assert self._mask is not None
        masked: list[str] = []
        for line in lines:
            text, self._carry = self._carry + line, ""
            if isinstance(line, LinePiece):
                head, self._carry = self._mask.split(text)
                if head:
                    masked.append(head)
            else:
                masked.append(self._mask(text))
        return masked

    def end_line(self) -> None:
        """The output ended (its process exited or was stopped) inside a cut line: keep
        what was held back of it as a line of its own."""
        if self._carry and self._mask:
            carry, self._carry = self._carry, ""
            self._append(self._mask(carry) + "\n")

    def _append(self, data: str) -> None:
        size = len(data) if data.isascii() else len(data.encode("utf-8", errors="replace"))
        self._buffer.append((data, size))
        self._buffered += size
        self._emitted += size
        if self._in_tail:
            self._trim_tail()

    def _trim_tail(self) -> None:
        """Drop the oldest whole lines the tail does not need: it keeps the fewest latest
        lines that hold at least ``limit/2`` bytes (the log's middle goes)."""
        while self._buffered - self._buffer[0][1] >= self._tail_budget:
            self._buffered -= self._buffer.popleft()[1]
        data, size = self._buffer[0]
        needed = self._tail_budget - (self._buffered - size)
        if needed <= 0 or needed >= size:
            return
        if data.isascii():
            start = data.rfind("\n", 0, size - needed) + 1
            kept = data[start:]
        else:
            raw = data.encode("utf-8", errors="replace")
            start = raw.rfind(b"\n", 0, size - needed) + 1
            kept = raw[start:].decode("utf-8", errors="replace")
        if start:
            self._buffer[0] = (kept, size - start)
            self._buffered -= start

    async def _added(self) -> None:
        if self._in_tail:
            if self._timer is None:
                self._timer = asyncio.create_task(self._flush_soon(self.TAIL_FLUSH_DELAY))
        elif self._buffered >= self.CHUNK_BYTES:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_soon(self.FLUSH_DELAY))

    async def _flush_soon(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None
        # close() may cancel this task; the write itself must not be cut in half
        await asyncio.shield(self.flush())

    async def flush(self, *, wait: bool = True) -> None:
        async with self._lock:
            if not self._buffer:
                return
            content = "".join(data for data, _ in self._buffer)
            size, end = self._buffered, self._emitted
            self._buffer.clear()
            self._buffered = 0
            offset = end - size
            drop = None
            if self._head_end is None:
                if end >= self._head_budget:
                    self._head_end = end
            elif min(end - self._tail_budget, offset) > self._head_end:
                # older tail chunks out of the window; never the chunk being written
                drop = (self._head_end, min(end - self._tail_budget, offset))
            future = self._recorder.log_chunk(self._id, self._step, offset, content, size, drop)
            future.add_done_callback(self._check_stored)
            if wait:
                with contextlib.suppress(LogWriteRefused):  # noted by _check_stored
                    await asyncio.shield(future)

    def _check_stored(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or not isinstance(error := future.exception(), LogWriteRefused):
            return
        if self.refused is None:
            self.refused = error.message
            # in plain ASCII, so that it can be stored where the chunk could not
            note = error.message.encode("ascii", "backslashreplace").decode()
            self._append(f"[ansflow] {note}\n")

    async def close(self) -> None:
        """Queue what is left; the step's next recorded change commits after it. Safe to
        call from ``finally`` after a cancellation."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.end_line()
        await self.flush(wait=False)
