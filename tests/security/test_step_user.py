"""Handing a workspace over to the step user: what changes owner, and what never does."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansflow.errors import ConfigurationError
from ansflow.trust.step_user import StepUser, StepUserProblem, check_reachable, hand_over
from tests.security.procs import outside_tmp

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
