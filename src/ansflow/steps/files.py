"""Files that step types pick from the workspace by glob (artifacts, test and coverage
reports, manifests, requirement files): never through a symbolic link out of it.

A match whose real location (every symbolic link resolved) is outside the workspace is
reported as ``outside`` for the caller to log, and never read or copied. ``open_inside``
re-checks the file it actually opened, so a link swapped after the glob (by a process the
step left running) is refused too. All functions block; call them in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

OUTSIDE = "a symbolic link to outside the workspace; skipped"


class OutsideWorkspace(OSError):
    """The opened file is not inside the workspace (a link changed after the glob)."""


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``, all links resolved, is ``root`` or under it."""
    real, base = path.resolve(), root.resolve()
    return real == base or base in real.parents


@dataclass(slots=True)
class Matches:
    files: list[Path] = field(default_factory=list)
    """Regular files inside the workspace, in glob order, each once."""
    outside: list[Path] = field(default_factory=list)
    """Matches that lead out of the workspace (not read, not copied)."""

    def labels(self, root: Path) -> list[str]:
        """The ``outside`` matches as paths relative to ``root``, for log lines."""
        return [str(path.relative_to(root)) if root in path.parents else str(path)
                for path in self.outside]


def glob_files(base: Path, patterns: Iterable[str], root: Path) -> Matches:
    """The files under ``base`` matching ``patterns`` that stay inside ``root``."""
    found = Matches()
    for pattern in patterns:
        for path in sorted(base.glob(pattern)):
            if path in found.files or path in found.outside:
                continue
            if not inside(path, root):
                found.outside.append(path)
            elif path.is_file():
                found.files.append(path)
    return found


def open_inside(path: Path, root: Path) -> BinaryIO:
    """``path`` opened for reading, checked to be a file inside ``root`` once open."""
    handle = path.open("rb")
    try:
        real = Path(os.readlink(f"/proc/self/fd/{handle.fileno()}"))
        base = root.resolve()
        if real != base and base not in real.parents:
            raise OutsideWorkspace(f"{path} leads outside the workspace")
    except BaseException:
        handle.close()
        raise
    return handle
