"""The subprocess runner: streaming, odd output, process-tree kills."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from ansflow.engine.process import MAX_LINE_BYTES, run_process


class Collect:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.bytes = 0
        self.first_at: float | None = None

    async def write(self, line: str) -> None:
        self.first_at = self.first_at or time.monotonic()
        if len(self.lines) < 100:  # keep a few: holding 1 GB of lines would be the test's RSS
            self.lines.append(line)
        self.bytes += len(line)


async def run(script: str, tmp_path: Path, grace: float = 1.0) -> tuple[int, Collect]:
    sink = Collect()
    result = await run_process(["bash", "-c", script], cwd=tmp_path, env=dict(os.environ),
                               sink=sink, grace=grace)
    return result.exit_code, sink


async def test_lines_stream_as_they_happen(tmp_path: Path) -> None:
    started = time.monotonic()
    code, sink = await run("echo first; sleep 1; echo second", tmp_path)
    assert code == 0 and sink.lines == ["first", "second"]
    assert sink.first_at is not None and sink.first_at - started < 0.8


async def test_binary_garbage_is_decoded_not_fatal(tmp_path: Path) -> None:
    code, sink = await run(r"printf 'ok\x00\xff\xfe\x80bad\r\nend'; exit 3", tmp_path)
    assert code == 3
    assert sink.lines == ["ok\ufffd\ufffd\ufffd\ufffdbad", "end"]


async def test_a_huge_line_is_cut_into_bounded_pieces(tmp_path: Path) -> None:
    code, sink = await run("head -c 300000 /dev/zero | tr '\\0' a; echo; echo tail", tmp_path)
    assert code == 0
    assert max(len(line) for line in sink.lines) == MAX_LINE_BYTES
    assert sink.lines[-1] == "tail"
    assert sum(len(line) for line in sink.lines[:-1]) == 300000


def _current_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def test_one_gigabyte_of_output_streams_with_bounded_memory(tmp_path: Path) -> None:
    # The current RSS, sampled while the output streams: a lifetime peak (ru_maxrss)
    # could already have been raised by an earlier test and would then hide growth here.
    baseline = _current_rss_kib()
    peak = baseline
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _current_rss_kib())
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        code, sink = await run("head -c 1073741824 /dev/zero | tr '\\0' 'x'", tmp_path)
    finally:
        done.set()
        await sampler
    assert code == 0
    assert sink.bytes == 1073741824
    assert peak - baseline < 50 * 1024, f"RSS grew by {(peak - baseline) // 1024} MB"


async def test_cancel_kills_the_process_group_including_term_ignoring_children(
        tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = (f"bash -c 'trap \"\" TERM; echo $$ > {pidfile}; while :; do sleep 0.1; done' &"
              " wait")
    task = asyncio.create_task(run(script, tmp_path, grace=0.5))
    for _ in range(200):  # the child writes its pid as soon as it starts
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    child = int(pidfile.read_text())
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


async def test_background_children_holding_the_pipe_are_reaped(tmp_path: Path) -> None:
    started = time.monotonic()
    code, sink = await run("sleep 30 & echo started", tmp_path)
    assert code == 0 and sink.lines == ["started"]
    assert time.monotonic() - started < 5


async def test_missing_tool_and_missing_directory(tmp_path: Path) -> None:
    sink = Collect()
    result = await run_process(["no-such-tool-xyz"], cwd=tmp_path, env=dict(os.environ),
                               sink=sink, grace=1)
    assert result.exit_code == 127
    assert result.error == "tool 'no-such-tool-xyz' is not installed on this worker"
    result = await run_process([sys.executable, "-V"], cwd=tmp_path / "nope",
                               env=dict(os.environ), sink=sink, grace=1)
    assert result.error is not None and "does not exist" in result.error
