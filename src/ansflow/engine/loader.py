"""Build the in-memory state of an execution from its rows (the recorder reads them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ansflow.config import Settings
from ansflow.engine.runtime import ExecutionState, StepDefinitionRow, StepRuntime, StepStateRow
from ansflow.errors import AnsFlowError
from ansflow.trust.masking import Masker


@dataclass(frozen=True, slots=True)
class ExecutionOptions:
    max_parallel: int
    timeout: float | None
    fail_fast: bool
    reuse_workspace_of: Path | None = None
    """A retry starts from a copy of the original execution's workspace, if it is here."""
    cancel_requested: bool = False
    report_status: dict[str, Any] | None = None
    was_parked: bool = False
    """Resumed after waiting parked (for an approval or a group): not an interruption."""


class ExecutionRow(Protocol):
    """What the engine reads of a stored execution."""

    id: int
    pipeline_id: int
    pipeline_version: int
    trigger: dict[str, Any]
    options: dict[str, Any]
    started_at: datetime | None
    heartbeat_at: datetime | None
    cancel_requested_at: datetime | None
    meta: dict[str, Any]


async def build_execution(execution: ExecutionRow,
                          rows: Sequence[tuple[StepDefinitionRow, StepStateRow]],
                          ciphertexts: Mapping[str, str], settings: Settings, *,
                          was_parked: bool = False) -> tuple[ExecutionState, ExecutionOptions]:
    """The state of a claimed execution; ``ciphertexts`` are the secrets its pipeline
    may see, by name (decrypted here, with the keys the settings name). ``was_parked``:
    it waited parked before this claim (which unparked it)."""
    names = {atomic.id: atomic.name for atomic, _ in rows}
    steps = {atomic.name: StepRuntime.from_rows(atomic, row, names) for atomic, row in rows}
    options = execution.options
    root = settings.workspace_root.resolve()
    state = ExecutionState(
        id=execution.id, pipeline_id=execution.pipeline_id,
        pipeline_name=str(options.get("pipeline_name", execution.pipeline_id)),
        pipeline_version=execution.pipeline_version, trigger=dict(execution.trigger),
        env=dict(options.get("env") or {}),
        workspace=root / str(execution.id),
        outputs_dir=root / f"{execution.id}.outputs",
        steps=steps, started_at=execution.started_at, heartbeat_at=execution.heartbeat_at,
        meta=dict(execution.meta or {}),
    )
    for step in steps.values():
        if step.matrix_of is not None:
            state.matrices.setdefault(step.matrix_of, []).append(step.name)
    if ciphertexts:
        # imported here: loading cryptography costs a local one-shot run about 20 ms
        from ansflow.trust.secrets import SecretBox

        box = SecretBox.of(settings)
        try:
            state.secrets = {name: await box.decrypt(value)
                             for name, value in ciphertexts.items()}
        except AnsFlowError as exc:
            state.secrets_problem = exc.message
        state.masker = Masker(state.secrets.values())
    return state, ExecutionOptions(
        max_parallel=int(options.get("max_parallel") or settings.max_parallel),
        timeout=options.get("timeout"),
        fail_fast=bool(options.get("fail_fast")),
        reuse_workspace_of=(root / str(options["reuse_workspace_of"])
                            if options.get("reuse_workspace_of") else None),
        cancel_requested=execution.cancel_requested_at is not None,
        report_status=options.get("report_status"),
        was_parked=was_parked,
    )
