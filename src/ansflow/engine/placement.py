"""Where a ready step runs: on this worker, or on another one through the step queue.

The scheduler (the execution's one lease holder) still decides when a step is ready and
counts it against ``max_parallel`` until it ends. ``Placer.run`` then runs it here, as
fast as ever, when this worker has every label of its ``runs_on`` and a free step slot
(``--concurrency``). Otherwise the step is handed over: its row gets a token
(committed first), the token goes to the step queue of its labels, and whichever live
worker with those labels has a free slot pops it and claims the row with the token.
The holder follows the row: woken by the execution's committed events (the event bus),
and reading it every heartbeat anyway:

* terminal: the step is done (its outputs and workspace manifest come from the row);
* pending with another token, or none and no step lease: handed back (its worker
  stopped): hand it over again;
* running under an expired step lease: its worker died; the attempt is marked
  ``interrupted`` at that worker's last heartbeat and the step handed over again (the
  row's ``worker_id`` is cleared first, so the lost worker's writes are refused).

Stopping (cancel, fail-fast, the execution's timeout) writes ``stop_requested`` on the
row; the worker that runs the step sees it at its next heartbeat, kills the step's
processes and records the status. A step nobody claimed yet is ended here. A holder that
hands the execution back (shutdown) leaves running steps to their workers: the next
holder adopts them while their step lease lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from ansflow.config import Settings
from ansflow.engine.recorder import Recorder, StepState
from ansflow.engine.runtime import ExecutionState, StepRuntime, interrupt_attempt, stop_message
from ansflow.errors import LeaseLost
from ansflow.queue.bus import EventBus
from ansflow.status import StepStatus, utcnow

logger = logging.getLogger(__name__)
RUNNING = (StepStatus.RUNNING.value, StepStatus.RETRYING.value)
SUBSCRIBE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class HandOver:
    """What travels in the step queue: which step, and the token that claims it."""

    execution_id: int
    step_execution_id: int
    step: str
    token: str
    labels: tuple[str, ...] = ()

    def encode(self) -> str:
        return json.dumps({"execution_id": self.execution_id, "step": self.step,
                           "step_execution_id": self.step_execution_id,
                           "token": self.token, "labels": list(self.labels)})

    @classmethod
    def decode(cls, raw: str | bytes) -> HandOver:
        """Raises ``ValueError`` on anything but an encoded hand-over."""
        try:
            body = json.loads(raw)
            return cls(int(body["execution_id"]), int(body["step_execution_id"]),
                       str(body["step"]), str(body["token"]),
                       tuple(str(label) for label in body["labels"]))
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a step hand-over: {exc}") from exc


class StepQueue(Protocol):
    """This worker's side of the step queue (``queue/step_queue.py``)."""

    labels: frozenset[str]
    bus: EventBus
    """Where the holder hears that a handed-over step changed."""

    def try_local(self, labels: Sequence[str]) -> bool:
        """Take one of this worker's step slots for a step with ``labels``, if this
        worker has them all and a slot is free."""
        ...

    def release_local(self) -> None: ...

    async def hand_over(self, handover: HandOver) -> None:
        """Queue the hand-over for a worker with its labels (after its row committed)."""
        ...


class Placer:
    """One per execution on its holder; ``run`` replaces running the step directly."""

    def __init__(self, queue: StepQueue, recorder: Recorder, state: ExecutionState,
                 settings: Settings, local: Callable[[StepRuntime], Awaitable[StepStatus]]
                 ) -> None:
        self.queue = queue
        self.recorder = recorder
        self.state = state
        self.settings = settings
        self.local = local
        self.poll = settings.heartbeat_seconds
        self._wake: dict[str, asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def adoptable(self, step: StepRuntime) -> bool:
        """A step another worker runs under a live step lease (from an earlier holder)."""
        return (step.status.value in RUNNING and step.lease_expires_at is not None
                and step.lease_expires_at > utcnow())

    async def run(self, step: StepRuntime) -> StepStatus:
        if self.adoptable(step):
            return await self._follow(step, None)
        if self.queue.try_local(step.labels):
            try:
                return await self.local(step)
            finally:
                self.queue.release_local()
        return await self._follow(step, await self._hand_over(step))

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _hand_over(self, step: StepRuntime, **values: Any) -> str:
        token = secrets.token_hex(8)
        await self._listen()
        self.recorder.share_sequence()
        await self.recorder.step_changed(step.row_id, step.name, dispatch=token,
                                         ready_at=step.ready_at, **values)
        await self.queue.hand_over(HandOver(self.state.id, step.row_id, step.name, token,
                                            tuple(step.labels)))
        return token

    async def _follow(self, step: StepRuntime, token: str | None) -> StepStatus:
        await self._listen()
        self.recorder.share_sequence()
        wake = self._wake[step.name] = asyncio.Event()
        try:
            while True:
                wake.clear()
                row = await self._read(step)
                if step.status.terminal:
                    return step.status
                token = await self._check(step, row, token)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll)
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(step, wake))
            raise
        finally:
            self._wake.pop(step.name, None)

    async def _read(self, step: StepRuntime) -> StepState:
        row = (await self.recorder.step_states([step.row_id]))[step.row_id]
        step.update_from(row)
        return row

    async def _check(self, step: StepRuntime, row: StepState, token: str | None) -> str | None:
        """Hand the step over again when it came back or its worker was lost; the token
        that now claims it."""
        live = row.lease_expires_at is not None and row.lease_expires_at > utcnow()
        if row.status == StepStatus.PENDING.value:
            if token is not None and row.dispatch == token:
                return token  # still waiting in the queue
            if row.dispatch is None and live:
                    return token  # claimed, about to start
            logger.info("execution %s step %s: handed back; handing it over again",
                        self.state.id, step.name)
            return await self._hand_over(step)
        if live:
            return token
        logger.warning("execution %s step %s: worker %s stopped renewing its lease; the "
                       "step is handed over again", self.state.id, step.name, row.worker_id)
        interrupt_attempt(step.attempts, self._last_beat(row))
        return await self._hand_over(step, status=StepStatus.PENDING, worker_id=None,
                                     lease_expires_at=None, attempts=list(step.attempts))

    def _last_beat(self, row: StepState) -> datetime:
        if row.lease_expires_at is None:
            return utcnow()
        return row.lease_expires_at - timedelta(seconds=self.settings.lease_seconds)

    async def _stop(self, step: StepRuntime, wake: asyncio.Event) -> None:
        """Stop a followed step with ``step.stop_status``: ask its worker, and wait until
        it recorded the end (or its lease ran out: then record it here)."""
        status = step.stop_status or StepStatus.CANCELLED
        if status == StepStatus.PENDING or self.recorder.lease_lost:
            return  # handing the execution back: the step's worker keeps it
        try:
            await self.recorder.step_changed(step.row_id, step.name,
                                             stop_requested=status.value)
            while True:
                wake.clear()
                row = await self._read(step)
                if step.status.terminal:
                    return
                lost = row.lease_expires_at is None or row.lease_expires_at <= utcnow()
                if row.status == StepStatus.PENDING.value or lost:
                    await self._end(step, status, row)
                    continue  # a claim may have won the race: read the row again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll)
        except LeaseLost:
            return

    async def _end(self, step: StepRuntime, status: StepStatus, row: StepState) -> None:
        """Record the end of a step no live worker runs."""
        # never claimed: its token goes; lost: its worker's writes are refused from now on
        fence: dict[str, Any] = {"dispatch": None}
        if row.status != StepStatus.PENDING.value:
            interrupt_attempt(step.attempts, self._last_beat(row), status.value)
            fence = {"worker_id": None}
        await self.recorder.step_changed(step.row_id, step.name, status=status,
                                         completed_at=utcnow(), error=stop_message(status),
                                         attempts=list(step.attempts), **fence)

    async def _listen(self) -> None:
        """Follow the execution's committed events (once, for every followed step)."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._events(),
                                                 name=f"placer-{self.state.id}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_SECONDS)

    async def _events(self) -> None:
        while True:
            async with self.queue.bus.subscribe(self.state.id) as subscription:
                self._subscribed.set()
                while not subscription.interrupted:
                    batch = await subscription.get(SUBSCRIBE_SECONDS)
                    for kind, data in batch.events if batch is not None else ():
                        if kind == "step" and (wake := self._wake.get(data.get("step", ""))):
                            wake.set()
            for wake in self._wake.values():  # events may be lost: read the rows again
                wake.set()
            await asyncio.sleep(self.poll)

