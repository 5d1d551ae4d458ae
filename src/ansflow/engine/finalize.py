"""The bookkeeping around a run: when a step became ready, what a resume interrupted,
the verdict on a finished execution and its summary."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from ansflow.engine.runtime import ExecutionState, StepRuntime
from ansflow.status import ExecutionStatus, StepStatus, utcnow


def final_status(state: ExecutionState, cancel_requested: bool, error: str | None
                 ) -> ExecutionStatus:
    if error is not None:
        return ExecutionStatus.ERROR
    if state.stopping == StepStatus.TIMED_OUT:
        return ExecutionStatus.TIMED_OUT
    steps = state.steps.values()
    if any(s.broken for s in steps):
        return ExecutionStatus.FAILED
    if cancel_requested:
        return ExecutionStatus.CANCELLED
    if any(s.status == StepStatus.CANCELLED for s in steps):
        return ExecutionStatus.CANCELLED
    return ExecutionStatus.SUCCESS


def ready_time(state: ExecutionState, step: StepRuntime) -> datetime:
    """When ``step`` became ready: its last dependency's end (a step a retry reused counts
    as done at the execution's start), or the execution's start for a root. Derived, so
    it costs no write of its own and is the same after a resume."""
    start = state.started_at or utcnow()
    ends = (state.steps[d].completed_at for d in step.depends_on)
    return max([start, *(end for end in ends if end is not None)])


def note_resume(state: ExecutionState, now: datetime) -> datetime | None:
    """If this start resumes an execution a worker began before, note the interruption
    in ``state.meta`` and return when that worker was last alive (its last heartbeat)."""
    if state.started_at is None:
        return None
    alive = state.heartbeat_at or _last_recorded(state)
    crashed_at = min(max(alive, state.started_at), now)
    state.meta.setdefault("interruptions", []).append(
        {"last_heartbeat_at": crashed_at.isoformat(), "resumed_at": now.isoformat()})
    return crashed_at


def _last_recorded(state: ExecutionState) -> datetime:
    """The latest instant the rows mention (for rows written before heartbeats were)."""
    moments = [state.started_at or utcnow()]
    for step in state.steps.values():
        moments += [m for m in (step.started_at, step.completed_at) if m is not None]
        moments += [datetime.fromisoformat(value) for attempt in step.attempts
                    for key in ("started_at", "completed_at")
                    if isinstance(value := attempt.get(key), str)]
    return max(moments)


def summary(state: ExecutionState) -> dict[str, Any]:
    """The execution's ``meta`` at its end; the record derives timings and the critical
    path from the rows (``spec/timeline.py``), so they are not kept twice."""
    return {**state.meta,
            "totals": dict(Counter(s.status.value for s in state.steps.values()))}
