"""Handing a workspace over to the step user: what changes owner, and what never does."""

from __future__ import annotations

import asyncio
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ansflow.errors import ConfigurationError
from ansflow.trust.step_user import StepUser, StepUserProblem, check_reachable, hand_over
from ansflow.workspace.backend import FileBackend
from ansflow.workspace.manifest import ManifestRef
from ansflow.workspace.store import WorkspaceStore
from tests.security.procs import outside_tmp
from tests.workspace.test_store import checkout, run_step

NOBODY = StepUser.named("nobody")


def owner(path: Path) -> int:
    return path.lstat().st_uid


def test_what_the_worker_made_becomes_the_step_users_and_links_are_never_followed(
        tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("root's")
    workspace = tmp_path / "ws"
    (workspace / "made-by-worker" / "deep").mkdir(parents=True)
    (workspace / "made-by-worker" / "deep" / "file").write_text("x")
    (workspace / "link-out").symlink_to(outside)
    (workspace / "made-by-worker" / "dir-link").symlink_to(tmp_path)
    hand_over(NOBODY, [workspace])
    assert owner(workspace) == owner(workspace / "made-by-worker" / "deep" / "file") == 65534
    assert owner(workspace / "link-out") == 65534  # the link itself
    assert owner(outside) == owner(tmp_path) == 0
    # below a directory the user owns, only directories are looked at
    (workspace / "report-dir").mkdir()
    (workspace / "root-file").write_text("y")
    hand_over(NOBODY, [workspace])
    assert owner(workspace / "report-dir") == 65534
    assert owner(workspace / "root-file") == 0


def test_a_symlink_given_as_the_path_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    hand_over(NOBODY, [tmp_path / "link"])
    assert owner(target) == 0


def test_an_unreachable_workspace_and_bad_users_are_named() -> None:
    with outside_tmp() as root:  # pytest's own temp dirs are closed to other users
        closed = root / "closed"
        (closed / "ws").mkdir(parents=True)
        check_reachable(NOBODY, closed / "ws")
        closed.chmod(0o700)
        with pytest.raises(StepUserProblem, match=f"{closed} is not searchable by it"):
            check_reachable(NOBODY, closed / "ws")
    with pytest.raises(ConfigurationError, match="no user 'no-such-user-x'"):
        StepUser.named("no-such-user-x")
    with pytest.raises(ConfigurationError, match="is root"):
        StepUser.named("root")


async def test_files_restored_into_the_step_users_workspace_are_the_step_users(
        tmp_path: Path) -> None:
    """A workspace the step user already owns (an earlier step ran there) gets what a
    step on another host left: the worker (root) writes it, the step must change it."""
    assert os.geteuid() == 0, "this test needs the worker's situation: running as root"
    store = WorkspaceStore(FileBackend(tmp_path / "store"))
    try:
        saved = await run_step(store, tmp_path / "host-a" / "1", [], checkout)
        with outside_tmp() as host_b:  # pytest's temp dirs are closed to other users
            workspace = host_b / "1"
            workspace.mkdir()
            hand_over(NOBODY, [workspace])
            await store.before_step(workspace, [ManifestRef("checkout", saved.digest,
                                                            datetime.now(UTC))])
            made = sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*"))
            assert made == ["empty", "main.py", "run.sh", "src", "src/app.py"]
            assert {p: owner(workspace / p) for p in made} == dict.fromkeys(made, 65534)
            assert os.access(workspace / "run.sh", os.X_OK)  # modes are kept
            change = await asyncio.to_thread(
                subprocess.run, [*NOBODY.setpriv(), "sh", "-c", "echo more >> src/app.py && "
                                 "chmod 700 run.sh && echo new > src/new.txt && rm -r empty"],
                cwd=workspace, capture_output=True, text=True, timeout=30, check=False)
            assert change.returncode == 0, change.stderr
            assert (workspace / "src" / "app.py").read_text() == "print('hi')\nmore\n"
            await store.release(workspace)
    finally:
        await store.close()


async def test_a_restore_into_roots_own_workspace_changes_no_owner(tmp_path: Path) -> None:
    store = WorkspaceStore(FileBackend(tmp_path / "store"))
    try:
        saved = await run_step(store, tmp_path / "a" / "1", [], checkout)
        workspace = tmp_path / "b" / "1"
        await store.before_step(workspace, [ManifestRef("checkout", saved.digest,
                                                        datetime.now(UTC))])
        assert {owner(p) for p in workspace.rglob("*")} == {os.geteuid()}
    finally:
        await store.close()
