"""A step cancelled at any moment of its sandboxed command's start-up (fail-fast, a cancel
request, a timeout) ends at once and leaves no process behind."""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from pathlib import Path

from ansflow.config import Settings
from ansflow.engine.process import run_process
from ansflow.trust.sandbox import Sandbox
from tests.security.procs import with_marker

ATTEMPTS = 40
LATEST_CANCEL = 0.012
"""Seconds after the start: past bwrap's start-up (4-8 ms here) and the pipes' connection."""


class Discard:
    async def write(self, line: str) -> None:
        pass


async def test_a_cancel_during_sandbox_start_up_ends_the_step_and_leaves_nothing(
        tmp_path: Path) -> None:
    policy = Sandbox.for_settings(Settings(
        workspace_root=tmp_path / "ws", artifact_root=tmp_path / "artifacts",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'state' / 'ansflow.db'}",
        sandbox_writable=[tmp_path]))
    assert policy.mode == "bwrap", policy.reason
    workspace = tmp_path / "ws" / "1"
    workspace.mkdir(parents=True)
    env = policy.environment(os.environ)
    marker = f"{random.randint(1000, 9999)}.{uuid.uuid4().int % 10**6:06d}"  # sleep's seconds
    stuck = []
    for attempt in range(ATTEMPTS):
        output = tmp_path / f"step.{attempt}.outputs"
        output.touch()
        step_sandbox = policy.for_step(f"1/step/{attempt}", workspace=workspace,
                                       output_file=output, network=True)
        task = asyncio.create_task(run_process(
            ["sleep", marker], cwd=workspace, env=env, sink=Discard(), grace=0.5,
            sandbox=step_sandbox))
        delay = LATEST_CANCEL * attempt / ATTEMPTS
        await asyncio.sleep(delay)
        task.cancel()
        # the kill's grace and its SIGKILL take about a second; a hang takes forever
        done, _ = await asyncio.wait({task}, timeout=15)
        if not done:
            stuck.append(round(delay * 1000, 1))
            task.cancel()
        step_sandbox.close()
    left = with_marker(marker)
    for pid in left:
        os.kill(pid, 9)
    assert stuck == [], f"cancelled this many ms after the start, the step never ended: {stuck}"
    assert left == []
