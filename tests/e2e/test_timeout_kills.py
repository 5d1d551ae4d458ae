"""A worker that kills 200 steps on timeout leaks no processes, descriptors or memory."""

from __future__ import annotations

import os
from pathlib import Path

from ansflow.config import Settings
from ansflow.engine.executor import PipelineExecutor
from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution, read_record


def _children_zombies() -> int:
    me = str(os.getpid())
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        count += fields[0] == "Z" and fields[1] == me
    return count


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_two_hundred_timeout_kills_leak_nothing(settings: Settings) -> None:
    async with Resources.open(settings) as resources:
        async def kills(count: int) -> None:
            doc = pipeline_doc(*[step(f"s{i}", "sleep 30", timeout=0.1) for i in range(count)],
                               max_parallel=10)
            execution_id = await create_execution(resources, doc)
            await PipelineExecutor(resources).execute(execution_id)
            record = await read_record(resources, execution_id)
            assert {s.status for s in record.steps} == {"timed_out"}, record

        await kills(20)  # warm: connections, caches and imports are in place
        fds, rss = len(os.listdir("/proc/self/fd")), _rss_kib()
        for _ in range(10):
            await kills(20)
        assert _children_zombies() == 0
        assert abs(len(os.listdir("/proc/self/fd")) - fds) <= 5
        assert _rss_kib() - rss <= 30 * 1024, f"RSS grew by {(_rss_kib() - rss) // 1024} MB"
