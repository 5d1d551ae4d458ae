"""The workspace store's two costs that bound every step (PRODUCT.md section 10):

* snapshot: saving what a step changed when it changed nothing, in a workspace of
  20,000 files (target <= 5 ms);
* restore: another host bringing 200 MB in 20,000 files into an empty workspace
  (target <= 5 s).

    .venv/bin/python bench/store.py                 # 20,000 files, 200 MB, 9 / 5 runs
    .venv/bin/python bench/store.py --files 2000 --megabytes 20 --restore-runs 3

Uses the file backend in a temporary directory (``--dir`` to choose the filesystem) and
prints medians with min-max. The restore runs read blobs the page cache may hold (they
were written just before), as on a store host that served them recently. For contrast it
also times the snapshot without inotify, where every path is ``lstat``-ed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from ansflow.status import utcnow
from ansflow.workspace.backend import FileBackend
from ansflow.workspace.manifest import ManifestRef
from ansflow.workspace.store import WorkspaceStore

PER_DIRECTORY = 100


def make_workspace(root: Path, files: int, size: int) -> None:
    """``files`` distinct files of ``size`` bytes, ``PER_DIRECTORY`` to a directory."""
    block = os.urandom(size)
    for number in range(files):
        directory = root / f"pkg{number // PER_DIRECTORY // 10}" / f"mod{number // PER_DIRECTORY}"
        if number % PER_DIRECTORY == 0:
            directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{number}.dat").write_bytes(number.to_bytes(8, "big") + block[8:])


async def timed(runs: int, once: Callable[[int], Awaitable[None]]) -> list[float]:
    seconds = []
    for run in range(runs):
        started = time.perf_counter()
        await once(run)
        seconds.append(time.perf_counter() - started)
    return seconds


def line(what: str, seconds: list[float], unit: float, label: str) -> str:
    median = statistics.median(seconds) * unit
    return (f"| {what} | {median:.3f} {label} | {min(seconds) * unit:.3f}-"
            f"{max(seconds) * unit:.3f} {label} | {len(seconds)} |")


async def snapshot(store: WorkspaceStore, root: Path, runs: int, *, watched: bool
                   ) -> tuple[list[float], list[float]]:
    """Seconds of ``after_step`` alone, and of ``before_step`` + ``after_step``."""
    workspace = await store.workspace(root)
    if not watched:
        workspace.index.blind = True

    saves, steps = [], []
    for _ in range(runs):
        began = time.perf_counter()
        start = await store.before_step(root, [])
        saving = time.perf_counter()
        saved = await store.after_step(start)
        saves.append(time.perf_counter() - saving)
        steps.append(time.perf_counter() - began)
        start.workspace.end(start.mark, saved=saved.digest)
        assert saved.paths == 0, saved
    await store.release(root)
    return saves, steps


async def main(args: argparse.Namespace) -> None:
    base = Path(tempfile.mkdtemp(prefix="ansflow-bench-store-", dir=args.dir))
    try:
        store = WorkspaceStore(FileBackend(base / "store"))
        source = base / "host-a" / "1"
        source.mkdir(parents=True)
        size = args.megabytes * 1_000_000 // args.files
        started = time.perf_counter()
        first = await store.before_step(source, [])
        make_workspace(source, args.files, size)
        made = time.perf_counter() - started
        saved = await store.after_step(first)
        first.workspace.end(first.mark, saved=saved.digest)
        first_save = time.perf_counter() - started - made
        print(f"workspace: {args.files} files of {size} bytes in "
              f"{args.files // PER_DIRECTORY} directories; first save (hash + upload "
              f"{saved.uploaded_bytes / 1e6:.0f} MB): {first_save:.1f} s\n")

        watched = await snapshot(store, source, args.snapshot_runs, watched=True)
        unwatched = await snapshot(store, source, max(3, args.restore_runs), watched=False)
        needs = [ManifestRef("checkout", saved.digest, utcnow())]

        async def restore(run: int) -> None:
            target = base / "host-b" / str(run)
            start = await store.before_step(target, needs)
            assert start.restored.files == args.files, start.restored
            start.workspace.end(start.mark, saved=None)
            await store.release(target)

        restores = await timed(args.restore_runs, restore)
        await store.close()
        print("| measure | median | min-max | runs |")
        print("|---|---|---|---|")
        print(line("snapshot of an unchanged workspace: after_step (target <= 5 ms)",
                   watched[0], 1e3, "ms"))
        print(line("same, before_step + after_step (the step's whole cost)", watched[1], 1e3,
                   "ms"))
        print(line("snapshot without inotify (lstat of every path)", unwatched[0], 1e3, "ms"))
        print(line(f"restore {args.megabytes} MB in {args.files} files (target <= 5 s)",
                   restores, 1, "s"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--snapshot-runs", type=int, default=9)
    parser.add_argument("--restore-runs", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the temporary directory goes")
    asyncio.run(main(parser.parse_args()))
