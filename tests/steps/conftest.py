"""Run one step type directly, with a real workspace and the real subprocess runner."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ansflow.config import Settings
from ansflow.steps.base import ExecutionInfo, StepContext, StepResult, get_step_type
from ansflow.trust.sandbox import Sandbox


@dataclass
class ListSink:
    lines: list[str] = field(default_factory=list)

    async def write(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class StepRun:
    result: StepResult
    log: ListSink
    ctx: StepContext[Any]


RunStep = Callable[..., Awaitable[StepRun]]


FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    path = tmp_path / "workspace"
    path.mkdir()
    return path


@pytest.fixture
def sandbox(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    """The default sandbox (bwrap where it works); the run's temp dirs, where tests keep
    repositories, stubs standing in for remote hosts and their logs, stay usable."""
    return Sandbox.for_settings(Settings(
        workspace_root=tmp_path / "ws", artifact_root=tmp_path / "artifacts",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'state' / 'ansflow.db'}",
        # also the fixtures and this Python, which a checkout under /tmp would hide
        sandbox_writable=[tmp_path_factory.getbasetemp(), FIXTURES, Path(sys.prefix)]))


@pytest.fixture
def run_step(workspace: Path, tmp_path: Path, sandbox: Sandbox) -> RunStep:
    """``await run_step("build", {"tool": "make"}, env={...})`` → StepRun."""

    async def run(
        type_name: str,
        config: Mapping[str, Any],
        *,
        env: Mapping[str, str] | None = None,
        step_name: str = "step",
        trigger: Mapping[str, Any] | None = None,
        step_statuses: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        attempt: int = 1,
        deny_private: bool = False,
    ) -> StepRun:
        step_type = get_step_type(type_name)
        sink = ListSink()
        output = tmp_path / f"{step_name}.{attempt}.outputs"
        output.touch()
        confined = sandbox.for_step(f"1/{step_name}/{attempt}", workspace=workspace,
                                    output_file=output, network=True)
        ctx: StepContext[Any] = StepContext(
            step_name=step_name,
            config=step_type.parse_config(config, step=step_name),
            workspace=workspace,
            env={**os.environ, **(env or {})},
            execution=ExecutionInfo(
                id=1, pipeline_id=1, pipeline_name="test-pipeline", pipeline_version=1,
                trigger=trigger or {}, started_at=None, step_statuses=step_statuses or {},
            ),
            sink=sink,
            kill_grace=2.0,
            attempt=attempt,
            secrets=secrets or {},
            deny_private_targets=deny_private,
            sandbox=confined,
        )
        try:
            return StepRun(await step_type.run(ctx), sink, ctx)
        finally:
            confined.close()

    return run
