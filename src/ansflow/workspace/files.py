"""Reading and writing workspace paths without ever leaving the workspace.

Every access walks from the workspace's directory one component at a time with
``O_NOFOLLOW``, so a symbolic link planted anywhere on the way (by a step, or by a
manifest) cannot redirect a read or a write outside. All functions block.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ansflow.workspace.backend import CHUNK, Opener, StoreError
from ansflow.workspace.manifest import DIR, FILE, LINK, Entry, blob_key, link_stays_inside

Reader = Callable[[], BinaryIO]
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Directories:
    """Open directory descriptors inside one workspace, by relative path; ``owner``: who
    what is written here must belong to (see ``owner_to_give``)."""

    def __init__(self, root: Path) -> None:
        fd = os.open(root, _DIR_FLAGS)
        self.fds: dict[str, int] = {"": fd}
        self.owner = owner_to_give(fd)
        self._lock = threading.Lock()

    def __enter__(self) -> Directories:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def get(self, directory: str, *, create: bool, mode: int = 0o755) -> int:
        """The descriptor of ``directory``; with ``create``, a non-directory in the way is
        replaced and missing directories are made."""
        with self._lock:
            fd = self.fds.get(directory)
        if fd is not None:
            return fd
        parent, _, name = directory.rpartition("/")
        parent_fd = self.get(parent, create=create)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except (FileNotFoundError, NotADirectoryError, OSError):
            if not create:
                raise
            remove(parent_fd, name)
            os.mkdir(name, mode, dir_fd=parent_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            if self.owner is not None:
                os.fchown(fd, *self.owner)
        with self._lock:
            if directory in self.fds:  # another thread opened it meanwhile
                os.close(fd)
                return self.fds[directory]
            self.fds[directory] = fd
        return fd

    def forget(self, directory: str) -> None:
        """Close descriptors of ``directory`` and below (it is being removed)."""
        for path in [d for d in self.fds if d == directory or d.startswith(directory + "/")]:
            if path:
                os.close(self.fds.pop(path))


def owner_to_give(root_fd: int) -> tuple[int, int] | None:
    """The workspace directory's owner and group, when this process is root and the
    directory is another user's (the step user's, handed over by ``trust/step_user``):
    what a restore writes becomes theirs, so that steps can change it. None otherwise."""
    if os.geteuid() != 0:
        return None
    st = os.fstat(root_fd)
    return None if st.st_uid == 0 else (st.st_uid, st.st_gid)


def remove(parent_fd: int, name: str) -> None:
    """Remove whatever ``name`` is (a whole tree for a directory); nothing if absent."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            for child in os.listdir(fd):
                remove(fd, child)
        finally:
            os.close(fd)
        os.rmdir(name, dir_fd=parent_fd)
    else:
        os.unlink(name, dir_fd=parent_fd)


def read_file(dirs: Directories, path: str) -> BinaryIO:
    """A workspace file opened for reading (never through a link)."""
    directory, _, name = path.rpartition("/")
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=dirs.get(directory, create=False))
    return os.fdopen(fd, "rb")


def write_entry(dirs: Directories, path: str, entry: Entry, blobs: Opener
                ) -> os.stat_result | None:
    """Make ``path`` hold ``entry``; its new ``lstat`` (None: a link that would lead out
    of the workspace, not made)."""
    directory, _, name = path.rpartition("/")
    parent = dirs.get(directory, create=True)
    if entry.kind == DIR:
        dirs.get(path, create=True, mode=entry.mode)
        os.chmod(name, entry.mode, dir_fd=parent, follow_symlinks=False)
        return os.lstat(name, dir_fd=parent)
    if entry.kind == LINK:
        if not link_stays_inside(path, entry.target):
            return None
        dirs.forget(path)
        remove(parent, name)
        os.symlink(entry.target, name, dir_fd=parent)
        if dirs.owner is not None:
            os.chown(name, *dirs.owner, dir_fd=parent, follow_symlinks=False)
        return os.lstat(name, dir_fd=parent)
    assert entry.kind == FILE
    return _write_file(dirs, parent, path, entry, blobs)


def _write_file(dirs: Directories, parent: int, path: str, entry: Entry, blobs: Opener
                ) -> os.stat_result:
    name = path.rpartition("/")[2]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, entry.mode, dir_fd=parent)
    except OSError:  # a directory or a link in the way
        dirs.forget(path)
        remove(parent, name)
        fd = os.open(name, flags, entry.mode, dir_fd=parent)
    try:
        if dirs.owner is not None:  # before the content: a chown clears set-id bits
            os.fchown(fd, *dirs.owner)
        st = _fill(fd, entry, blobs)
    finally:
        os.close(fd)
    if st is None:
        raise StoreError(f"blob {entry.digest} in the store is corrupt (restoring {path!r})")
    return st


def _fill(fd: int, entry: Entry, blobs: Opener) -> os.stat_result | None:
    """Copy the blob into ``fd``, checking its digest; its stat (None if corrupt)."""
    hasher = hashlib.sha256()
    with blobs(blob_key(entry.digest)) as source:
        while chunk := source.read(CHUNK):
            hasher.update(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
    st = os.fstat(fd)
    if stat.S_IMODE(st.st_mode) != entry.mode:
        os.fchmod(fd, entry.mode)
        st = os.fstat(fd)
    return st if hasher.hexdigest() == entry.digest else None


def delete_path(dirs: Directories, path: str) -> None:
    directory, _, name = path.rpartition("/")
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        parent = dirs.get(directory, create=False)
        dirs.forget(path)
        remove(parent, name)
