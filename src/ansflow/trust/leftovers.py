"""Processes a step's command left behind, found by a tag or by their pids cgroup.

Every command a step runs carries ``ANSFLOW_STEP_TAG=<owner>/<serial>/<label>`` in its
environment (GitHub's runner does the same with ``RUNNER_TRACKING_ID``): ``<owner>`` is
``<pid>.<start time>`` of the worker process that started it, ``<serial>`` makes the tag
unique within that process. ``/proc/<pid>/environ`` keeps the environment a process was
started with, so whatever escaped the command's process group (``setsid``, a double fork,
``nohup``) still shows the tag, and a tag whose owner is no longer running marks the
leftovers of a crashed worker. A process that deliberately starts a child without the
variable escapes the scan; the per-command pids cgroup, where the worker can create one,
catches those as well and bounds how many processes a command may have (fork bombs).

Everything here is blocking ``/proc`` and ``/sys`` access: callers in a loop use a thread.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

logger = logging.getLogger(__name__)

TAG_VAR = "ANSFLOW_STEP_TAG"
_TAG_PREFIX = TAG_VAR.encode() + b"="
_SERIAL = itertools.count(1)
_CGROUP_NAME = re.compile(r"^ansflow-(\d+\.\d+)-\d+$")
PROC = Path("/proc")


def process_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of its stat), which
    tells a process apart from a later one that reuses its pid."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[19])


def owner() -> str:
    """This process as the owner of the tags it hands out: ``<pid>.<start time>`` (by
    pid, so that a forked child, such as a Celery pool process, is an owner of its own)."""
    return _owner_of(os.getpid())


@cache
def _owner_of(pid: int) -> str:
    return f"{pid}.{process_start(pid) or 0}"


def owner_alive(owner_id: str) -> bool:
    pid, _, start = owner_id.partition(".")
    return pid.isdigit() and start.isdigit() and process_start(int(pid)) == int(start)


def new_tag(label: str) -> tuple[int, str]:
    """A serial number unique in this process, and the tag made of it and ``label``."""
    serial = next(_SERIAL)
    return serial, f"{owner()}/{serial}/{label}"


def _tag_of(pid: str) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            environ = handle.read()
    except OSError:  # gone, or a zombie, or not ours to read
        return None
    at = environ.find(_TAG_PREFIX)
    if at == -1 or (at > 0 and environ[at - 1] != 0):
        return None
    end = environ.find(b"\0", at)
    return environ[at + len(_TAG_PREFIX):end if end != -1 else None].decode(errors="replace")


def tagged(match: Callable[[str], bool]) -> list[int]:
    """Live processes whose tag satisfies ``match`` (zombies have no environment left)."""
    found = []
    self_pid = os.getpid()
    for name in os.listdir(PROC):
        if name.isdigit() and int(name) != self_pid:
            tag = _tag_of(name)
            if tag is not None and match(tag):
                found.append(int(name))
    return found


def is_zombie(pid: int) -> bool:
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def send(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_until_gone(find: Callable[[], list[int]], seconds: float = 2.0) -> int:
    """SIGKILL what ``find`` returns until it returns only zombies; how many were found."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while True:
        pids = [pid for pid in find() if not is_zombie(pid)]
        if not pids or time.monotonic() > deadline:
            if pids:
                logger.error("processes %s survived SIGKILL for %.1fs", pids, seconds)
            return len(seen)
        seen.update(pids)
        send(pids, signal.SIGKILL)
        time.sleep(0.01)


@dataclass(frozen=True, slots=True)
class PidsCgroups:
    """Per-command pids cgroups under this process's own pids cgroup: a cgroup v1 ``pids``
    hierarchy, or cgroup v2 where this cgroup lets its children use the pids controller.
    ``detect`` returns None where the worker may not create them (most containers)."""

    base: Path

    @classmethod
    def detect(cls) -> PidsCgroups | None:
        base = _own_pids_cgroup()
        if base is None:
            return None
        probe = base / f"ansflow-{owner()}-0"
        try:
            probe.mkdir(exist_ok=True)
            (probe / "pids.max").write_text("64")
        except OSError:
            return None
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()
        return cls(base)

    def create(self, serial: int, limit: int) -> Path:
        path = self.base / f"ansflow-{owner()}-{serial}"
        path.mkdir()
        (path / "pids.max").write_text(str(limit))
        return path

    @staticmethod
    def members(path: Path) -> list[int]:
        try:
            return [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def remove(self, path: Path) -> None:
        """Kill what is left in the cgroup, then remove it (the kernel refuses while a
        process, even a dying one, is still in it)."""
        kill_until_gone(lambda: self.members(path))
        for _ in range(100):
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)
        logger.error("pids cgroup %s could not be removed", path)

    def orphans(self) -> list[Path]:
        """Cgroups of commands whose worker process is gone."""
        try:
            entries = list(self.base.iterdir())
        except OSError:
            return []
        return [entry for entry in entries
                if (m := _CGROUP_NAME.match(entry.name)) and not owner_alive(m.group(1))]


def _own_pids_cgroup() -> Path | None:
    """Where this process's pids cgroup is in the file system, if it is writable."""
    mounts = _cgroup_mounts()
    for line in (PROC / "self" / "cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(",") and "v1" in mounts:
            candidate = mounts["v1"] / path.lstrip("/")
        elif hierarchy == "0" and "v2" in mounts:
            candidate = mounts["v2"] / path.lstrip("/")
            if "pids" not in _read(candidate / "cgroup.subtree_control").split():
                continue
        else:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return None


def _cgroup_mounts() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for line in _read(PROC / "self" / "mountinfo").splitlines():
        before, _, after = line.partition(" - ")
        fstype, _, options = after.split(" ", 2)
        if fstype == "cgroup" and "pids" in options.split(","):
            found["v1"] = Path(before.split()[4])
        elif fstype == "cgroup2":
            found["v2"] = Path(before.split()[4])
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def reap_orphans(cgroups: PidsCgroups | None) -> int:
    """Kill the processes of commands whose worker process died (found by tag, and in
    the pids cgroups such workers left); how many there were."""
    def orphaned(tag: str) -> bool:
        return not owner_alive(tag.split("/", 1)[0])

    killed = kill_until_gone(lambda: tagged(orphaned))
    if cgroups is not None:
        for path in cgroups.orphans():
            killed += len(cgroups.members(path))
            cgroups.remove(path)
    return killed
