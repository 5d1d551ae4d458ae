"""Step logs through the real executor on MariaDB: the size limit, tailing by offset,
odd output, and a timed-out step whose children ignore SIGTERM."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ansflow.api.schemas import LogPublic
from ansflow.api.views import log_view
from ansflow.config import Settings
from ansflow.db.models import StepExecution
from ansflow.db.store import Store
from ansflow.engine.executor import PipelineExecutor
from ansflow.engine.recorder import Event
from ansflow.resources import Resources
from ansflow.status import TERMINAL_STEP
from ansflow.trust.sandbox import Sandbox
from tests.builders import pipeline_doc, step
from tests.engine.harness import create_execution, read_record, run_doc, step_processes

MIB = 1024 * 1024
MARKER = re.compile(r"^\[ansflow\] \.\.\. (\d+) bytes of log left out \.\.\.$", re.MULTILINE)
PAYLOAD = "0123456789" * 8


@pytest.fixture
async def small_log(settings: Settings) -> AsyncIterator[Resources]:
    limited = settings.model_copy(update={"log_limit_bytes": MIB})
    async with Resources.open(limited) as opened:
        yield opened


async def step_row(resources: Resources, execution_id: int, name: str) -> StepExecution:
    async with resources.db.session() as session:
        return await Store(session).step_by_name(execution_id, name)


async def read(resources: Resources, row: StepExecution, offset: int, max_bytes: int
               ) -> LogPublic:
    async with resources.db.session() as session:
        store = Store(session)
        current = await session.get(StepExecution, row.id)
        assert current is not None
        chunks = await store.read_log(row.id, offset, max_bytes)
        return log_view(list(chunks), offset, current.log_bytes,
                        current.status in TERMINAL_STEP, max_bytes)


async def read_all(resources: Resources, row: StepExecution, window: int
                   ) -> list[LogPublic]:
    """Tail a finished log from 0 in windows of about ``window`` bytes."""
    views = [await read(resources, row, 0, window)]
    while not views[-1].complete:
        assert len(views) < 1000
        views.append(await read(resources, row, views[-1].next_offset, window))
    return views


async def test_an_oversized_log_keeps_head_and_tail_around_one_marker(
        small_log: Resources) -> None:
    lines = 30_000  # about 3 MB
    script = (f'for i in $(seq 1 {lines}); do printf "line %06d {PAYLOAD}\\n" $i; done\n'
              "echo LAST-LINE")
    ran = await run_doc(small_log, pipeline_doc(step("flood", script)))
    assert ran.status == "success", ran.step("flood").error
    row = await step_row(small_log, ran.record.id, "flood")
    command = f"$ bash -eo pipefail -c {script} flood\n"
    printed = len(command) + lines * len(f"line 000001 {PAYLOAD}\n") + len("LAST-LINE\n")
    assert row.log_bytes == printed, "log_bytes counts every byte written, kept or not"

    view = await read(small_log, row, 0, 10 * MIB)
    markers = MARKER.findall(view.content)
    assert len(markers) == 1, markers
    left_out = int(markers[0])
    assert view.truncated_bytes == left_out
    head, tail = view.content.split(f"[ansflow] ... {left_out} bytes of log left out ...\n")
    kept = len(head.encode()) + len(tail.encode())
    assert kept + left_out == printed
    # head and tail budgets are half the limit each, give or take one 64 KiB chunk
    assert MIB - 70_000 <= kept <= MIB + 140_000, kept
    assert head.startswith(command + "line 000001 ")
    assert head.endswith("\n") and tail.endswith(f"line {lines:06d} {PAYLOAD}\nLAST-LINE\n")
    assert re.match(r"line \d{6} ", tail), "the tail starts with a whole line"
    tail_numbers = [int(n) for n in re.findall(r"^line (\d{6}) ", tail, re.MULTILINE)]
    assert tail_numbers == list(range(tail_numbers[0], lines + 1)), "the tail is contiguous"
    assert view.complete and view.next_offset == printed


async def test_a_non_ascii_flood_keeps_whole_lines_and_counts_bytes(
        small_log: Resources) -> None:
    accented = "é" * 40 + "ü" * 10  # 100 bytes of UTF-8 in 50 characters
    script = f'for i in $(seq 1 15000); do printf "ligne %06d {accented}\\n" $i; done'
    ran = await run_doc(small_log, pipeline_doc(step("flood", script)))
    assert ran.status == "success", ran.step("flood").error
    row = await step_row(small_log, ran.record.id, "flood")
    view = await read(small_log, row, 0, 10 * MIB)
    marker = f"[ansflow] ... {view.truncated_bytes} bytes of log left out ...\n"
    head, tail = view.content.split(marker)
    assert len(head.encode()) + len(tail.encode()) + view.truncated_bytes == row.log_bytes
    assert re.match(r"ligne \d{6} é", tail), "the tail starts with a whole line"
    numbers = [int(n) for n in re.findall(r"^ligne (\d{6}) ", tail, re.MULTILINE)]
    assert numbers == list(range(numbers[0], 15001))
    assert all(line.endswith(accented) for line in tail.splitlines())


async def test_tailing_by_offset_gives_consistent_windows(small_log: Resources) -> None:
    script = f'for i in $(seq 1 25000); do printf "row %06d {PAYLOAD}\\n" $i; done'
    ran = await run_doc(small_log, pipeline_doc(step("flood", script)))
    row = await step_row(small_log, ran.record.id, "flood")
    whole = await read(small_log, row, 0, 10 * MIB)
    views = await read_all(small_log, row, 100_000)
    assert len(views) > 10
    for before, after in itertools.pairwise(views):
        assert after.offset == before.next_offset > before.offset, "no overlap, no hole"
    assert "".join(v.content for v in views) == whole.content
    assert sum(v.truncated_bytes for v in views) == whole.truncated_bytes > 0
    # a reader that starts inside the dropped middle is told how much it missed from there
    marker_at = whole.content.index("[ansflow] ...")
    gap_start = len(whole.content[:marker_at].encode())
    inside = await read(small_log, row, gap_start + 1000, 50_000)
    assert inside.content.startswith(
        f"[ansflow] ... {whole.truncated_bytes - 1000} bytes of log left out ...\n")
    done = await read(small_log, row, whole.next_offset, 50_000)
    assert (done.content, done.complete, done.next_offset) == ("", True, whole.next_offset)


async def test_tailing_a_running_step(settings: Settings) -> None:
    async with Resources.open(settings) as resources:
        script = 'for i in $(seq 1 40); do echo "tick $i"; sleep 0.03; done'
        execution_id = await create_execution(resources, pipeline_doc(step("slow", script)))
        run = asyncio.create_task(PipelineExecutor(resources).execute(execution_id))
        seen: list[LogPublic] = []
        offset = 0
        while True:
            row = await step_row(resources, execution_id, "slow")
            view = await read(resources, row, offset, 64 * 1024)
            assert view.offset == offset and view.next_offset >= offset
            seen.append(view)
            offset = view.next_offset
            if view.complete:
                break
            await asyncio.sleep(0.05)
        await run
        assert sum(1 for v in seen if v.content) >= 3, "the log was readable while running"
        text = "".join(v.content for v in seen)
        assert text.splitlines()[1:] == [f"tick {i}" for i in range(1, 41)]
        record = await read_record(resources, execution_id)
        assert record.status == "success"


async def test_binary_junk_and_a_200_kb_line(small_log: Resources) -> None:
    junk = ("import random, sys; r = random.Random(7); "
            "sys.stdout.buffer.write(bytes(r.getrandbits(8) for _ in range(100_000)))")
    script = (f'python3 -c "{junk}"; printf "\\n\\x00\\xff\\xfe end-of-junk\\n"\n'
              "head -c 200000 /dev/zero | tr '\\0' x; echo; echo after-the-long-line")
    ran = await run_doc(small_log, pipeline_doc(
        step("junk", script), step("junk-fails", f"{script}; exit 5")))
    assert ran.statuses() == {"junk": "success", "junk-fails": "failed"}
    assert ran.step("junk-fails").exit_code == 5
    for name in ("junk", "junk-fails"):
        row = await step_row(small_log, ran.record.id, name)
        view = await read(small_log, row, 0, 10 * MIB)
        assert view.truncated_bytes == 0 and view.complete
        assert view.next_offset == row.log_bytes == len(view.content.encode())
        lines = view.content.splitlines()
        assert "\ufffd\ufffd\ufffd end-of-junk" in lines
        long_pieces = [line for line in lines if set(line) == {"x"}]
        # pieces of at most 64 KiB; a cut may come a little early when secrets are masked
        # (the end of a piece that could start a secret waits for the next one), and this
        # run's other tests may have stored global secrets
        assert len(long_pieces) == 4 and max(map(len, long_pieces)) == 65536
        assert "".join(long_pieces) == "x" * 200000
        assert lines[-1] == "after-the-long-line"


async def test_a_timed_out_step_with_term_ignoring_children_leaves_nothing_behind(
        settings: Settings, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    child = tmp_path / "child.sh"
    child.write_text(f"trap '' TERM\nsleep 300 &\necho $! >> {pids}\necho $$ >> {pids}\n"
                     "while :; do echo still-here; sleep 0.02; done\n")
    script = f"bash {child} &\nbash {child} &\nwait"
    async with Resources.open(settings) as resources:
        ran = await run_doc(resources, pipeline_doc(
            step("hang", script, timeout=0.7), step("after", depends_on=["hang"]),
            step("other", "sleep 0.1")))
        assert ran.statuses() == {"hang": "timed_out", "after": "skipped", "other": "success"}
        assert ran.status == "failed"
        rows = [await step_row(resources, ran.record.id, n) for n in ("hang", "after", "other")]
        assert all(r.status in TERMINAL_STEP for r in rows), [r.status for r in rows]
        log = await read(resources, rows[0], 0, MIB)
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 4, "two children and their sleeps"
    assert step_processes(ran.record.id, "hang") == [], "a process of the step survived"
    lines = log.content.splitlines()
    assert "still-here" in lines
    assert lines[-1] == "[ansflow] step timed out after 0.7s"
    hang = ran.step("hang")
    assert hang.error == "timed out after 0.7s" and hang.attempts[0].status == "timed_out"
    assert hang.started_at is not None and hang.completed_at is not None
    # the children ignore SIGTERM: unsandboxed they die at the SIGKILL after the 1 s grace
    # period; in bwrap's PID namespace they die with the script, whose shell SIGTERM ends
    took = (hang.completed_at - hang.started_at).total_seconds()
    sandboxed = Sandbox.for_settings(settings).mode == "bwrap"
    assert 0.7 + (0 if sandboxed else settings.kill_grace_seconds) - 0.1 < took < 5, took


async def test_the_whole_log_is_stored_before_the_step_is_reported_finished(
        resources: Resources) -> None:
    events: list[Event] = []
    doc = pipeline_doc(step("ok", "echo one; echo two"), step("bad", "echo oops; exit 2"),
                       step("slow", "sleep 5", timeout=0.3))
    execution_id = await create_execution(resources, doc)
    await PipelineExecutor(resources, [events.append]).execute(execution_id)
    for name in ("ok", "bad", "slow"):
        mine = [e for e in events if e.data.get("step") == name]
        ended = next(i for i, e in enumerate(mine)
                     if e.kind == "step" and e.data.get("status") in TERMINAL_STEP)
        assert [e for e in mine[ended:] if e.kind == "log"] == [], name
        row = await step_row(resources, execution_id, name)
        assert row.log_bytes == sum(len(e.data["content"].encode()) for e in mine
                                    if e.kind == "log")
