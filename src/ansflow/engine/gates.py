"""Steps that wait for the outside world (approvals), for the scheduler.

A waiting step holds no task and no parallel slot. It ends once its decision slot is
filled (``db/parking.py``): by a person through the API (the heartbeat or a resume finds
it), or by the engine itself when the approval's deadline passes or the execution
stops. The slot is filled once, so a decision racing a timeout or a cancel has exactly
one outcome; the engine then records the step's end as one of its own changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ansflow.engine.recorder import Recorder
from ansflow.engine.runtime import ExecutionState, StepRuntime
from ansflow.status import StepStatus, utcnow


class Gates:
    """The waiting steps of one execution, by name."""

    def __init__(self, recorder: Recorder, state: ExecutionState) -> None:
        self.recorder = recorder
        self.state = state
        self.waiting: dict[str, StepRuntime] = {
            s.name: s for s in state.steps.values() if s.status == StepStatus.WAITING}
        self.found: dict[int, dict[str, Any]] = {
            s.row_id: s.decision for s in self.waiting.values() if s.decision}
        """Decisions taken outside (found at load or by the heartbeat), to carry out."""

    def __bool__(self) -> bool:
        return bool(self.waiting)

    @property
    def ids(self) -> list[int]:
        return [s.row_id for s in self.waiting.values()]

    def add(self, step: StepRuntime) -> None:
        self.waiting[step.name] = step

    def next_deadline(self) -> datetime | None:
        deadlines = [d for s in self.waiting.values() if (d := _expires(s)) is not None]
        return min(deadlines, default=None)

    async def apply(self) -> list[StepRuntime]:
        """Carry out the decisions found; the steps that ended."""
        found, self.found = self.found, {}
        by_id = {s.row_id: s for s in self.waiting.values()}
        ended = []
        for step_id, decision in found.items():
            if (step := by_id.get(step_id)) is not None:
                await self._conclude(step, decision)
                ended.append(step)
        return ended

    async def expire(self) -> list[StepRuntime]:
        """Decide the approvals whose deadline passed (``timed_out``, unless a person
        decided first); the steps that ended."""
        now = utcnow()
        ended = []
        for step in list(self.waiting.values()):
            expires = _expires(step)
            if expires is not None and expires <= now:
                await self._take(step, "timed_out", now)
                ended.append(step)
        return ended

    async def stop(self, status: StepStatus) -> list[StepRuntime]:
        """End every waiting step (the execution was cancelled or timed out): ``status``,
        unless a person decided first."""
        now = utcnow()
        ended = list(self.waiting.values())
        for step in ended:
            await self._take(step, "cancelled", now, stopped=status)
        return ended

    async def _take(self, step: StepRuntime, verdict: str, now: datetime,
                    stopped: StepStatus | None = None) -> None:
        decision = await self.recorder.claim_decision(step.row_id, {
            "verdict": verdict, "by": None, "at": now.isoformat(), "comment": None})
        await self._conclude(step, decision, stopped)

    async def _conclude(self, step: StepRuntime, decision: dict[str, Any],
                        stopped: StepStatus | None = None) -> None:
        verdict, by, comment = decision["verdict"], decision.get("by"), decision.get("comment")
        at = datetime.fromisoformat(decision["at"])
        status, error, code = _outcome(step, verdict, by, comment, stopped)
        step.status, step.completed_at, step.decision = status, at, decision
        step.attempts = [dict(a) for a in step.attempts]
        if step.attempts:
            step.attempts[-1].update(status=verdict, completed_at=at.isoformat())
        self.waiting.pop(step.name, None)
        await self.recorder.step_changed(step.row_id, step.name, status=status,
                                         completed_at=at, attempts=list(step.attempts),
                                         error=error, error_code=code)


def _outcome(step: StepRuntime, verdict: str, by: str | None, comment: str | None,
             stopped: StepStatus | None) -> tuple[StepStatus, str | None, str | None]:
    if verdict == "approved":
        return StepStatus.SUCCESS, None, None
    if verdict == "rejected":
        return (StepStatus.FAILED, f"rejected by {by}" + (f": {comment}" if comment else ""),
                "rejected")
    if verdict == "timed_out":
        timeout = float(step.config.get("timeout") or 0)
        return StepStatus.FAILED, f"no decision within {timeout:g}s", "approval_timeout"
    if stopped == StepStatus.TIMED_OUT:
        return StepStatus.TIMED_OUT, "the execution timed out", None
    return StepStatus.CANCELLED, "the execution was cancelled", None


def _expires(step: StepRuntime) -> datetime | None:
    value = step.result.get("expires_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None
