"""The verdict on a finished execution, and its summary (critical path, totals)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ansflow.engine.runtime import ExecutionState
from ansflow.spec.graph import Dag, critical_path
from ansflow.status import ExecutionStatus, StepStatus


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


def step_durations(state: ExecutionState) -> dict[str, float]:
    return {
        s.name: (s.completed_at - s.started_at).total_seconds()
        for s in state.steps.values()
        if s.started_at is not None and s.completed_at is not None
    }


def summary(state: ExecutionState, dag: Dag) -> dict[str, Any]:
    path = critical_path(dag, step_durations(state))
    return {
        "critical_path": {"steps": path.steps, "duration_seconds": path.duration_seconds},
        "slack_seconds": path.slack_seconds,
        "totals": dict(Counter(s.status.value for s in state.steps.values())),
    }
