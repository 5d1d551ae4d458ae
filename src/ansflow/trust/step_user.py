"""The user steps run as (``ANSFLOW_STEP_USER``): a real uid drop outside any namespace.

The worker (root) starts each command through ``setpriv`` as that user, with no
supplementary groups and ``no_new_privs`` (a setuid ``sudo`` cannot win root back). What
the step must write is handed over to the user first: its workspace (also a copy the
worker made for a retry, or a directory a step type created in it), its output file and
its temp directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ansflow.errors import AnsFlowError, ConfigurationError


class StepUserProblem(AnsFlowError):
    """The step user cannot do what the step needs (reach its workspace)."""

    code = "sandbox_refused"


@dataclass(frozen=True, slots=True)
class StepUser:
    """A user (not root) the worker, running as root, can start commands as."""

    name: str
    uid: int
    gid: int
    home: str
    setpriv_path: str
    prlimit_path: str

    @classmethod
    def named(cls, name: str) -> StepUser:
        try:
            entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, OverflowError):
            raise ConfigurationError(f"ANSFLOW_STEP_USER: no user {name!r} on this host"
                                     ) from None
        if entry.pw_uid == 0:
            raise ConfigurationError(f"ANSFLOW_STEP_USER: {name!r} is root, which is no "
                                     "privilege drop")
        if os.geteuid() != 0:
            raise ConfigurationError("ANSFLOW_STEP_USER needs the worker to run as root "
                                     "(only root can start processes as another user)")
        setpriv, prlimit = shutil.which("setpriv"), shutil.which("prlimit")
        if setpriv is None or prlimit is None:
            raise ConfigurationError("ANSFLOW_STEP_USER needs setpriv and prlimit "
                                     "(util-linux), which are not installed")
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, setpriv,
                   prlimit)

    def prlimit(self, processes: int) -> list[str]:
        """Started as root (which the limit does not bind), it binds the step user: the
        count is of all the user's processes, so concurrent steps share it."""
        return [self.prlimit_path, f"--nproc={processes}:{processes}", "--"]

    def setpriv(self) -> list[str]:
        return [self.setpriv_path, f"--reuid={self.uid}", f"--regid={self.gid}",
                "--clear-groups", "--no-new-privs", "--"]


def allow_search(directory: Path) -> None:
    """Let other users pass through ``directory`` (not list it), if this process owns it."""
    info = directory.stat()
    if info.st_uid == os.geteuid() and not info.st_mode & stat.S_IXOTH:
        directory.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def check_reachable(user: StepUser, directory: Path) -> None:
    """Without bwrap the step user walks the real path to its workspace; say which
    directory stops it rather than fail on a confusing "permission denied"."""
    for parent in reversed((directory.resolve() / "x").parents):
        info = parent.stat()
        bit = (stat.S_IXUSR if info.st_uid == user.uid else
               stat.S_IXGRP if info.st_gid == user.gid else stat.S_IXOTH)
        if not info.st_mode & bit:
            raise StepUserProblem(f"the step user {user.name} cannot reach the workspace: "
                                  f"{parent} is not searchable by it")


def hand_over(user: StepUser, paths: Sequence[Path]) -> None:
    """Make ``paths`` the step user's: a directory the worker made (a fresh workspace, a
    copy for a retry, a report directory) becomes theirs with everything in it; below a
    directory the user owns only directories are looked at.

    The worker is root and the tree is the step's: every step is taken through file
    descriptors, never following a symlink, so that a step racing it (a directory
    swapped for a link to /etc) cannot turn it into a chown of anything outside.
    """
    for path in paths:
        try:
            fd = os.open(path, _DIRECTORY)
        except (NotADirectoryError, FileNotFoundError):  # a file, or gone
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_uid != user.uid:
                    os.chown(path, user.uid, user.gid, follow_symlinks=False)
            continue
        except OSError:  # ELOOP: a symlink, not followed
            continue
        try:
            foreign = os.fstat(fd).st_uid != user.uid
            if foreign:
                os.fchown(fd, user.uid, user.gid)
            _hand_over_below(fd, user, everything=foreign)
        finally:
            os.close(fd)


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _hand_over_below(dir_fd: int, user: StepUser, *, everything: bool) -> None:
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(info.st_mode)
            foreign = info.st_uid != user.uid
            if foreign and (everything or is_dir):
                with contextlib.suppress(FileNotFoundError):
                    os.chown(entry.name, user.uid, user.gid, dir_fd=dir_fd,
                             follow_symlinks=False)
            if is_dir:
                _hand_over_subdirectory(dir_fd, entry.name, user, everything or foreign)


def _hand_over_subdirectory(dir_fd: int, name: str, user: StepUser, everything: bool) -> None:
    try:
        fd = os.open(name, _DIRECTORY, dir_fd=dir_fd)
    except OSError:  # gone, or swapped for a symlink since it was listed
        return
    try:
        _hand_over_below(fd, user, everything=everything)
    finally:
        os.close(fd)
