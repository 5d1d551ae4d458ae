"""Steps that wait for the outside world (approvals), for the scheduler.

A waiting step holds no task and no parallel slot. It ends when someone decides it
(the API writes the decision to its row; the heartbeat or a resume finds it), when its
deadline passes, or when the execution stops. Each of those writes is guarded by
``status = 'waiting'`` in the database, and the engine takes the row as stored, so a
decision racing a timeout or a cancel has exactly one outcome everywhere.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ansflow.engine.recorder import DbRecorder
from ansflow.engine.runtime import ExecutionState, StepRuntime
from ansflow.status import StepStatus, utcnow


class Gates:
    """The waiting steps of one execution, by name."""

    def __init__(self, recorder: DbRecorder, state: ExecutionState) -> None:
        self.recorder = recorder
        self.state = state
        self.waiting: dict[str, StepRuntime] = {
            s.name: s for s in state.steps.values() if s.status == StepStatus.WAITING}
        self.found: list[dict[str, Any]] = []
        """Rows the heartbeat found decided, applied by the scheduler's loop."""

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

    def apply(self, rows: list[dict[str, Any]]) -> list[StepRuntime]:
        """Take decisions stored by someone else; the steps that ended."""
        by_id = {s.row_id: s for s in self.waiting.values()}
        ended = []
        for row in rows:
            step = by_id.get(row["id"])
            if step is None or StepStatus(row["status"]) == StepStatus.WAITING:
                continue
            self._take(step, row)
            ended.append(step)
        return ended

    async def expire(self) -> list[StepRuntime]:
        """Fail the approvals whose deadline passed; the steps that ended."""
        now = utcnow()
        ended = []
        for step in list(self.waiting.values()):
            expires = _expires(step)
            if expires is None or expires > now:
                continue
            timeout = float(step.config.get("timeout") or 0)
            ended.append(await self._settle(
                step, StepStatus.FAILED, "timed_out", f"no decision within {timeout:g}s",
                "approval_timeout"))
        return ended

    async def stop(self, status: StepStatus) -> list[StepRuntime]:
        """End every waiting step with ``status`` (the execution was cancelled or timed
        out); the steps that ended, some perhaps decided just before."""
        message = ("the execution timed out" if status == StepStatus.TIMED_OUT
                   else "the execution was cancelled")
        return [await self._settle(step, status, status.value, message, None)
                for step in list(self.waiting.values())]

    async def _settle(self, step: StepRuntime, status: StepStatus, decision: str,
                      error: str, code: str | None) -> StepRuntime:
        now = utcnow()
        attempts = [dict(a) for a in step.attempts]
        if attempts:
            attempts[-1].update(status=decision, completed_at=now.isoformat())
        row = await self.recorder.settle_waiting(step.row_id, step.name, {
            "status": status, "completed_at": now, "attempts": attempts, "error": error,
            "error_code": code,
            "result": {**step.result, "decision": decision, "decided_at": now.isoformat()}})
        self._take(step, row)
        return step

    def _take(self, step: StepRuntime, row: dict[str, Any]) -> None:
        step.status = StepStatus(row["status"])
        step.result = dict(row["result"] or {})
        step.attempts = list(row["attempts"] or [])
        step.completed_at = row["completed_at"]
        self.waiting.pop(step.name, None)
        self.recorder.publish_step(step.name, status=step.status, error=row["error"])


def _expires(step: StepRuntime) -> datetime | None:
    value = step.result.get("expires_at")
    return datetime.fromisoformat(value) if isinstance(value, str) else None
