"""THE subprocess runner: every step type runs its commands through ``run_process``.

Each command runs in its own session (so its whole process tree shares one process
group), its stdout and stderr are merged and streamed line by line into a sink as they
arrive, with bounded memory whatever the output size. When the caller is cancelled
(timeout, cancel request, lost lease), the group gets SIGTERM, then SIGKILL after the
grace period; the kill runs shielded so cancellation cannot skip it.

A step's commands also get a ``StepSandbox`` (``trust/sandbox.py``): the command then
starts confined (bwrap, a tag, a pids cgroup, the step user), SIGTERM goes to the
process group inside the sandbox, and whatever the command left running is killed as
soon as it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ansflow.trust.sandbox import Confined, StepSandbox

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
# After the main process exits, children that still hold the output pipe get this long
# to finish writing before the group is killed (GitHub and GitLab also reap leftovers).
DRAIN_SECONDS = 1.0


class LineSink(Protocol):
    """Receives decoded output lines (without the newline), in order, one call at a time."""

    async def write(self, line: str) -> None: ...


@runtime_checkable
class BatchLineSink(LineSink, Protocol):
    """A sink that also takes many lines at once (the step log: a flood of output is
    handed over a read buffer at a time instead of line by line)."""

    async def write_lines(self, lines: list[str]) -> None: ...


class LinePiece(str):
    """A piece of a line longer than ``MAX_LINE_BYTES``, cut there: the line goes on in
    the next line handed to the sink (which masks secrets across the cut)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ProcessResult:
    exit_code: int
    duration: float
    error: str | None = None
    """Set when the command could not start at all (e.g. the tool is not installed)."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None


def decode_line(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    return text.removesuffix("\r")


def _pieces(line: str) -> list[str]:
    """``line`` cut so that no piece exceeds ``MAX_LINE_BYTES`` bytes of UTF-8."""
    if len(line) <= MAX_LINE_BYTES // 4:
        return [line]
    raw = line.encode("utf-8")
    if len(raw) <= MAX_LINE_BYTES:
        return [line]
    pieces = [raw[i:i + MAX_LINE_BYTES].decode("utf-8", errors="replace")
              for i in range(0, len(raw), MAX_LINE_BYTES)]
    return [LinePiece(piece) for piece in pieces[:-1]] + pieces[-1:]


def split_lines(block: bytes) -> list[str]:
    """Decode complete lines at once (much cheaper than line by line): ``\n`` is never
    part of a multi-byte UTF-8 sequence, so splitting after decoding is exact."""
    text = block.decode("utf-8", errors="replace")
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    lines = text.split("\n")
    if "\r" in text:
        lines = [line.removesuffix("\r") for line in lines]
    if len(text) > MAX_LINE_BYTES // 4 and max(map(len, lines)) > MAX_LINE_BYTES // 4:
        lines = [piece for line in lines for piece in _pieces(line)]
    return lines


def _line_writer(sink: LineSink) -> Callable[[list[str]], Awaitable[None]]:
    if isinstance(sink, BatchLineSink):  # a protocol check is slow: once per stream
        return sink.write_lines

    async def write_each(lines: list[str]) -> None:
        for line in lines:
            await sink.write(line)

    return write_each


async def stream_lines(reader: asyncio.StreamReader, sink: LineSink) -> None:
    """Split a byte stream into lines; a line longer than ``MAX_LINE_BYTES`` is cut in
    pieces, so memory stays bounded whatever the output."""
    emit = _line_writer(sink)
    pending = b""
    while chunk := await reader.read(READ_CHUNK):
        pending += chunk
        cut = pending.rfind(b"\n")
        if cut != -1:
            await emit(split_lines(pending[:cut]))
            pending = pending[cut + 1:]
        while len(pending) >= MAX_LINE_BYTES:
            await sink.write(LinePiece(decode_line(pending[:MAX_LINE_BYTES])))
            pending = pending[MAX_LINE_BYTES:]
    if pending:
        await emit(split_lines(pending))


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # the group leader is gone and its id was reused by someone else's group
        return False
    return True


async def kill_tree(proc: asyncio.subprocess.Process, grace: float,
                    confined: Confined | None = None) -> None:
    """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it. In a
    bwrap sandbox SIGTERM goes to the group inside it (bwrap itself would die of it and
    take the sandbox down at once, leaving the command no grace)."""
    pgid = proc.pid
    if _signal_tree(proc, signal.SIGTERM, confined):
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), timeout=0.05)
            else:
                await asyncio.sleep(0.05)
        if _signal_tree(proc, signal.SIGKILL, confined):
            # SIGKILL is delivered asynchronously; do not report the tree dead too early
            for _ in range(100):
                if not _group_alive(pgid):
                    break
                await asyncio.sleep(0.02)
    if proc.returncode is None:
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace + 1.0)
        except TimeoutError:
            if confined is None:
                raise
            # its group is gone, but a process of the sandbox escaped it: bwrap signalled
            # while setting up, before its child took a session of its own and asked to
            # die with it. It holds the output pipe, which ``wait`` also waits for.
            await asyncio.to_thread(confined.kill_escaped)
            await proc.wait()


def _signal_tree(proc: asyncio.subprocess.Process, sig: signal.Signals,
                 confined: Confined | None) -> bool:
    """Signal the command's group (and, in a sandbox, the group inside it); whether the
    group was still there."""
    if confined is not None and confined.bwrap:
        inner = _children(proc.pid)
        for pid in inner:
            _signal_group(pid, sig)
    return _signal_group(proc.pid, sig)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs. Zombies do not count: orphans are
    reaped by PID 1, which in a container may never do it."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if entry.name.isdigit() and _running_in_group(entry / "stat", pgid):
            return True
    return False


def _running_in_group(stat_file: Path, pgid: int) -> bool:
    try:
        fields = stat_file.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    # after the command name: state, ppid, pgrp
    return fields[0] != "Z" and int(fields[2]) == pgid


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    sink: LineSink,
    grace: float,
    stdin: bytes | None = None,
    sandbox: StepSandbox | None = None,
) -> ProcessResult:
    """Run ``argv`` to completion, streaming its output into ``sink``.

    Cancelling the caller kills the whole process tree before ``CancelledError``
    propagates. Output left by children after the main process exits is drained for
    ``DRAIN_SECONDS``, then the remaining group is killed. With ``sandbox`` the command
    runs confined, and nothing it started outlives it.
    """
    started = time.monotonic()
    unstartable = _unstartable(argv, cwd, env)
    if unstartable is not None:
        return ProcessResult(unstartable[0], time.monotonic() - started, error=unstartable[1])
    confined = None
    if sandbox is not None:  # a thread only for the slow cases: a thread hop costs too
        confined = (sandbox.confine(argv, cwd, env) if sandbox.cheap_confine
                    else await asyncio.to_thread(sandbox.confine, argv, cwd, env))
    try:
        return await _run(argv, cwd, env, sink, grace, stdin, confined, started)
    finally:
        if confined is not None and confined.cheap_release:
            confined.release()
        elif confined is not None:
            await asyncio.shield(asyncio.to_thread(confined.release))


async def _run(argv: Sequence[str], cwd: Path, env: Mapping[str, str], sink: LineSink,
               grace: float, stdin: bytes | None, confined: Confined | None, started: float
               ) -> ProcessResult:
    try:
        proc = await _spawn(confined.argv if confined else argv, cwd,
                            confined.env if confined else env, stdin is not None, grace,
                            confined)
    except FileNotFoundError as exc:
        missing = argv[0] if not Path(cwd).joinpath(argv[0]).exists() else str(exc.filename)
        message = f"tool {missing!r} is not installed on this worker"
        if exc.filename and str(exc.filename) == str(cwd):
            message = f"working directory {str(cwd)!r} does not exist"
        return ProcessResult(127, time.monotonic() - started, error=message)
    except PermissionError:
        return ProcessResult(126, time.monotonic() - started,
                             error=f"{argv[0]!r} is not executable")
    reader: asyncio.Task[None] | None = None
    try:
        if stdin is not None:
            await _feed_stdin(proc, stdin)
        assert proc.stdout is not None
        reader = asyncio.create_task(stream_lines(proc.stdout, sink))
        await _until_output_ends(proc, reader, grace, confined)
        exit_code = await proc.wait()
        return ProcessResult(exit_code, time.monotonic() - started)
    finally:
        if reader is not None and not reader.done():
            reader.cancel()
        if proc.returncode is None or _group_alive(proc.pid):
            await asyncio.shield(kill_tree(proc, grace, confined))


async def _spawn(argv: Sequence[str], cwd: Path, env: Mapping[str, str], has_stdin: bool,
                 grace: float, confined: Confined | None) -> asyncio.subprocess.Process:
    """Start the command in a session of its own. A cancel that comes meanwhile lets the
    start finish, kills the new tree like any other and then propagates: asyncio's own
    clean-up of a start cancelled half-way kills only the first process and then waits for
    the output pipe to close, which a sandbox's process orphaned in its set-up never does."""
    spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
        *argv, cwd=cwd, env=dict(env),
        stdin=asyncio.subprocess.PIPE if has_stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True))
    try:
        return await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):  # it may not have started at all
            await kill_tree(await spawn, grace, confined)
        raise


def _unstartable(argv: Sequence[str], cwd: Path, env: Mapping[str, str]
                 ) -> tuple[int, str] | None:
    """Why ``argv`` cannot start, checked before starting it: inside a sandbox the exec
    fails in there, where its reason would be lost."""
    if not cwd.is_dir():
        return 127, f"working directory {str(cwd)!r} does not exist"
    program = argv[0]
    if "/" in program:
        path = cwd / program
        if not path.exists():
            return 127, f"tool {program!r} is not installed on this worker"
        if path.is_dir() or not os.access(path, os.X_OK):
            return 126, f"{program!r} is not executable"
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        return 127, f"tool {program!r} is not installed on this worker"
    return None


async def _until_output_ends(
    proc: asyncio.subprocess.Process, reader: asyncio.Task[None], grace: float,
    confined: Confined | None,
) -> None:
    """Wait for EOF; if leftover children keep the pipe open after the main process
    exited, give them ``DRAIN_SECONDS`` and then kill them."""
    exited_at: float | None = None
    while True:
        done, _ = await asyncio.wait({reader}, timeout=0.1)
        if done:
            reader.result()
            return
        if proc.returncode is None:
            continue
        exited_at = exited_at or time.monotonic()
        if time.monotonic() - exited_at >= DRAIN_SECONDS:
            await asyncio.shield(kill_tree(proc, grace, confined))
            if confined is not None:  # escaped the group (setsid) and still holds the pipe
                await asyncio.shield(asyncio.to_thread(confined.kill_leftovers))
            await reader
            return


async def _feed_stdin(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    proc.stdin.close()
