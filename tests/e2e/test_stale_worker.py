"""A worker frozen (SIGSTOP) for three leases loses its execution to another; when it
wakes (SIGCONT) its writes are refused, counted, and its step processes are killed."""

from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from ansflow.config import Settings
from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.e2e.private_services import free_port
from tests.e2e.test_worker import _step_status, _terminal, start
from tests.e2e.workers import until, workers
from tests.engine.harness import read_record, step_processes


def _fenced(port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("ansflow_fenced_writes_total "))
    return float(line.split()[1])


async def test_a_frozen_worker_wakes_to_refused_writes_and_killed_steps(
        arq_settings: Settings, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    doc = pipeline_doc(step("long", f"echo $$ >> {pids}; sleep 15; echo done"))
    port = free_port()
    lease = arq_settings.lease_seconds
    async with Resources.open(arq_settings) as resources:
        with workers(arq_settings, tmp_path / "a", worker_metrics_port=port) as frozen:
            execution_id = await start(resources, doc)
            await until(lambda: _step_status(resources, execution_id, "long", "running"), 30,
                        "the step to run", frozen)
            await until(_file_has_lines(pids, 1), 10, "the step's pid")
            owner = [frozen[0].proc.pid]  # the step's own pid is a sandbox's
            assert step_processes(execution_id, "long", owner), "the step runs"
            assert _fenced(port) == 0
            frozen[0].signal(signal.SIGSTOP)
            time.sleep(3 * lease)
            with workers(arq_settings, tmp_path / "b") as others:
                await until(_file_has_lines(pids, 2), 30, "another worker's attempt", others)
                frozen[0].signal(signal.SIGCONT)
                woke = time.monotonic()
                while (step_processes(execution_id, "long", owner)
                       and time.monotonic() - woke < 15):
                    time.sleep(0.05)
                gone = time.monotonic() - woke
                # one renewal interval (lease / 3, at most 1 s) plus the kill, with room
                # for a loaded machine; the step itself would live 15 s
                assert not step_processes(execution_id, "long", owner), \
                    "the frozen worker's step still runs"
                assert gone < 5, gone
                await until(lambda: _terminal(resources, execution_id), 60, "the end", others)
                assert _fenced(port) > 0
        record = await read_record(resources, execution_id)
    assert record.status == "success", record
    assert [a.status for a in record.steps[0].attempts] == ["interrupted", "success"]


def _file_has_lines(path: Path, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return path.exists() and len(path.read_text().split()) >= count
    return check
