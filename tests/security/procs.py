"""Host-side views of step processes: by the owner in their tag, or by a marker in argv."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ansflow.trust import leftovers


def owned_by(pid: int) -> list[int]:
    """Live processes started by steps of the worker process ``pid``."""
    return [p for p in leftovers.tagged(lambda tag: tag.startswith(f"{pid}."))
            if not leftovers.is_zombie(p)]


def with_marker(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in argv and not leftovers.is_zombie(int(name)):
            found.append(int(name))
    return found


@contextmanager
def outside_tmp() -> Iterator[Path]:
    """A directory steps could see without the sandbox's hiding: the sandbox gives every
    step a private /tmp, so service state under /tmp would be hidden by that alone."""
    path = Path("/var/tmp") / f"ansflow-sandbox-test-{uuid.uuid4().hex[:10]}"
    path.mkdir(mode=0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
