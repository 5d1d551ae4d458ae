"""The workspace store on real directories: what a step saves, what another host restores."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ansflow.workspace.backend import FileBackend, StoreError
from ansflow.workspace.manifest import EMPTY_DIGEST, FILE, LINK, ManifestRef, blob_key
from ansflow.workspace.store import Saved, WorkspaceStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[WorkspaceStore]:
    opened = WorkspaceStore(FileBackend(tmp_path / "store"))
    yield opened
    await opened.close()


async def run_step(store: WorkspaceStore, root: Path, needs: list[ManifestRef],
                   work: object = None) -> Saved:
    """What the engine does around a step: restore, the step's work, save."""
    start = await store.before_step(root, needs)
    if callable(work):
        work(root)
    saved = await store.after_step(start)
    start.workspace.end(start.mark, saved=saved.digest)
    return saved


def checkout(root: Path) -> None:
    (root / "src").mkdir()
    (root / "src" / "app.py").write_text("print('hi')\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("src/app.py", root / "main.py")
    (root / "empty").mkdir()


async def test_a_step_saves_what_it_made_and_another_host_restores_it(
        store: WorkspaceStore, tmp_path: Path) -> None:
    saved = await run_step(store, tmp_path / "a" / "1", [], checkout)
    changes = await store.manifest(saved.digest)
    assert set(changes) == {"src", "src/app.py", "run.sh", "main.py", "empty"}
    assert changes["main.py"] is not None and changes["main.py"].kind == LINK

    other = tmp_path / "b" / "1"
    start = await store.before_step(other, [ManifestRef("checkout", saved.digest, T0)])
    assert (start.restored.files, start.restored.bytes) == (2, len("print('hi')\n#!/bin/sh\n"))
    assert (other / "src" / "app.py").read_text() == "print('hi')\n"
    assert (other / "run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(other / "main.py") == "src/app.py"
    assert (other / "empty").is_dir()
    # what the restore wrote is not the next step's change
    assert await store.after_step(start) == Saved(EMPTY_DIGEST, 0, 0)


async def test_the_same_host_restores_nothing(store: WorkspaceStore, tmp_path: Path) -> None:
    root = tmp_path / "a" / "1"
    saved = await run_step(store, root, [], checkout)
    (root / "src" / "app.py").unlink()  # a sibling on this host deleted it meanwhile
    start = await store.before_step(root, [ManifestRef("checkout", saved.digest, T0)])
    assert start.restored.files == 0
    assert not (root / "src" / "app.py").exists()


async def test_only_missing_or_different_files_are_written(
        store: WorkspaceStore, tmp_path: Path) -> None:
    saved = await run_step(store, tmp_path / "a" / "1", [], checkout)
    other = tmp_path / "b" / "1"
    other.mkdir(parents=True)
    (other / "src").mkdir()
    (other / "src" / "app.py").write_text("print('hi')\n")  # already right
    (other / "run.sh").write_text("stale")
    start = await store.before_step(other, [ManifestRef("checkout", saved.digest, T0)])
    assert start.restored.files == 1  # run.sh only
    assert (other / "run.sh").read_text() == "#!/bin/sh\n"


async def test_deletions_travel_including_whole_directories(
        store: WorkspaceStore, tmp_path: Path) -> None:
    root = tmp_path / "a" / "1"
    first = await run_step(store, root, [], checkout)
    needs = [ManifestRef("checkout", first.digest, T0)]
    second = await run_step(store, root, needs, lambda r: (
        shutil.rmtree(r / "src"), (r / "run.sh").unlink()))
    changes = await store.manifest(second.digest)
    assert changes == {"src": None, "src/app.py": None, "run.sh": None}
    other = tmp_path / "b" / "1"
    await store.before_step(other, [*needs, ManifestRef("clean", second.digest, T0, ("checkout",))])
    assert sorted(os.listdir(other)) == ["empty", "main.py"]


async def test_parallel_branches_that_wrote_one_path_the_last_to_finish_wins(
        store: WorkspaceStore, tmp_path: Path) -> None:
    left = await run_step(store, tmp_path / "l" / "1", [],
                          lambda r: (r / "out.txt").write_text("left"))
    right = await run_step(store, tmp_path / "r" / "1", [],
                           lambda r: (r / "out.txt").write_text("right"))
    for name, left_done, right_done in (("x", 2, 1), ("y", 1, 2)):
        target = tmp_path / name / "1"
        await store.before_step(target, [
            ManifestRef("left", left.digest, T0 + timedelta(seconds=left_done)),
            ManifestRef("right", right.digest, T0 + timedelta(seconds=right_done))])
        expected = "left" if left_done > right_done else "right"
        assert (target / "out.txt").read_text() == expected


async def test_unchanged_content_is_stored_once(store: WorkspaceStore, tmp_path: Path) -> None:
    def twins(root: Path) -> None:
        (root / "a.bin").write_bytes(b"x" * 5000)
        (root / "b.bin").write_bytes(b"x" * 5000)

    first = await run_step(store, tmp_path / "a" / "1", [], twins)
    assert first.uploaded_bytes == 5000
    again = await run_step(store, tmp_path / "b" / "1", [], twins)
    assert again.uploaded_bytes == 0
    assert again.digest == first.digest


async def test_an_in_place_rewrite_of_the_same_size_is_seen(
        store: WorkspaceStore, tmp_path: Path) -> None:
    root = tmp_path / "a" / "1"
    first = await run_step(store, root, [], lambda r: (r / "f").write_text("aaaa"))
    stamp = (root / "f").stat()

    def rewrite(r: Path) -> None:
        (r / "f").write_text("bbbb")
        os.utime(r / "f", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # same size and mtime

    second = await run_step(store, root, [ManifestRef("one", first.digest, T0)], rewrite)
    entry = (await store.manifest(second.digest))["f"]
    assert entry is not None and entry.kind == FILE and entry.size == 4
    assert entry.digest != (await store.manifest(first.digest))["f"].digest  # type: ignore[union-attr]


async def test_without_inotify_every_scan_looks_everywhere(
        store: WorkspaceStore, tmp_path: Path) -> None:
    root = tmp_path / "a" / "1"
    workspace = await store.workspace(root)
    workspace.index.blind = True  # as on a host out of inotify watches
    saved = await run_step(store, root, [], checkout)
    assert len(await store.manifest(saved.digest)) == 5
    again = await run_step(store, root, [], lambda r: (r / "src" / "app.py").write_text("x"))
    assert set(await store.manifest(again.digest)) == {"src/app.py"}


async def test_changes_made_while_no_worker_watched_go_to_the_next_step(
        store: WorkspaceStore, tmp_path: Path) -> None:
    root = tmp_path / "a" / "1"
    await run_step(store, root, [], checkout)
    await store.release(root)  # the worker stops; its state file stays
    (root / "partial.o").write_text("from a killed attempt")
    (root / "run.sh").unlink()
    rerun = await run_step(store, root, [])  # finds its output up to date, writes nothing
    assert set(await store.manifest(rerun.digest)) == {"partial.o", "run.sh"}
    after = await run_step(store, root, [])
    assert after.digest == EMPTY_DIGEST


async def test_a_link_out_of_the_workspace_is_saved_but_never_restored(
        store: WorkspaceStore, tmp_path: Path) -> None:
    saved = await run_step(store, tmp_path / "a" / "1", [],
                           lambda r: os.symlink("/etc/passwd", r / "passwd"))
    other = tmp_path / "b" / "1"
    start = await store.before_step(other, [ManifestRef("s", saved.digest, T0)])
    assert start.restored.skipped_links == ["passwd"]
    assert not os.path.lexists(other / "passwd")


async def test_a_restore_never_writes_through_a_planted_link(
        store: WorkspaceStore, tmp_path: Path) -> None:
    saved = await run_step(store, tmp_path / "a" / "1", [], checkout)
    outside = tmp_path / "outside"
    outside.mkdir()
    other = tmp_path / "b" / "1"
    other.mkdir(parents=True)
    os.symlink(outside, other / "src")  # a step on this host made src a link out
    await store.before_step(other, [ManifestRef("checkout", saved.digest, T0)])
    assert list(outside.iterdir()) == []
    assert (other / "src").is_dir() and not (other / "src").is_symlink()
    assert (other / "src" / "app.py").read_text() == "print('hi')\n"


async def test_a_corrupt_blob_fails_the_restore_by_name(
        store: WorkspaceStore, tmp_path: Path) -> None:
    saved = await run_step(store, tmp_path / "a" / "1", [],
                           lambda r: (r / "f").write_text("good"))
    entry = (await store.manifest(saved.digest))["f"]
    assert entry is not None
    (tmp_path / "store" / blob_key(entry.digest)).write_text("evil")
    with pytest.raises(StoreError, match=f"blob {entry.digest} in the store is corrupt"):
        await store.before_step(tmp_path / "b" / "1", [ManifestRef("s", saved.digest, T0)])


async def test_a_manifest_missing_from_the_store_is_a_store_error(
        store: WorkspaceStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="the store has no object"):
        await store.before_step(tmp_path / "b" / "1", [ManifestRef("s", "f" * 64, T0)])
