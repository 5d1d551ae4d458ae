"""Files only the service's user may read: state directories (0700) and files (0600).

Modes are set explicitly when a path is created, not through the process umask: steps
inherit the umask, and a build's artifacts or a deployed release must keep ordinary modes.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700; existing directories keep
    their mode (an operator may have chosen it)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent process made it first
            directory.mkdir(mode=DIR_MODE)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def private_file(path: Path, *, create: bool = True) -> Path:
    """Create ``path`` empty with mode 0600 if it is missing (and ``create``); an existing
    file of this user that others may access is tightened to 0600 (state files that older
    versions created 0644)."""
    if create:
        private_dir(path.parent)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            return path
        except FileExistsError:
            pass
    with contextlib.suppress(FileNotFoundError):
        info = path.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, FILE_MODE)
    return path
