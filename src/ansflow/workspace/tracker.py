"""One execution's workspace on this host while a worker holds it: its index, the
changes every scan found, and which manifests the workspace reflects.

A step's changes are everything the scans found between its start and its end (the
steps of one execution on one host share the workspace, so a step's changes include what
a parallel sibling wrote meanwhile). Changes found when a workspace is opened again after
a crash (a killed attempt's partial work) belong to no finished step: they go to every
step that starts before one of them succeeds, so a re-run that finds its earlier output
up to date still saves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ansflow.workspace.index import Diff, Index, record
from ansflow.workspace.manifest import Changes, Entry

logger = logging.getLogger(__name__)
STATE_FORMAT = 1


class Workspace:
    """Created by ``WorkspaceStore.workspace``; every method runs on the event loop."""

    def __init__(self, root: Path, state_file: Path, index: Index,
                 reflected: dict[str, None]) -> None:
        self.root = root
        self.state_file = state_file
        self.index = index
        self.reflected = reflected
        """Digests of the manifests whose changes this workspace holds (insertion order)."""
        self.lock = asyncio.Lock()
        """Held by scans and restores: one at a time touches the index."""
        self.generation = 0
        self._log: list[tuple[int, Diff]] = []
        self._marks: Counter[int] = Counter()
        self._floor: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._version = self._saved_version = 0
        """Bumped by every change to the index or ``reflected``; the state file is
        written only when it moved."""

    @classmethod
    async def open(cls, root: Path, state_file: Path) -> Workspace:
        index, reflected = await asyncio.to_thread(_load_state, root, state_file)
        workspace = cls(root, state_file, index, reflected)
        index.watch()
        if index.inotify is not None:
            workspace._loop = asyncio.get_running_loop()
            workspace._loop.add_reader(index.inotify.fd, index.take_events)
        if await workspace.refresh():
            workspace._floor = 0  # a killed attempt's leftovers: see the module docstring
        return workspace

    async def refresh(self) -> bool:
        """Scan what changed since the last scan; whether anything did."""
        async with self.lock:
            return await self.refresh_locked()

    async def refresh_locked(self) -> bool:
        """``refresh`` for a caller that holds ``lock``."""
        self.index.take_events()
        full, dirty = self.index.take_work()
        if not full and not dirty:
            return False
        diff = await asyncio.to_thread(self.index.scan, full, dirty)
        if not diff:
            return False
        self.generation += 1
        self._version += 1
        self._log.append((self.generation, diff))
        return True

    async def begin(self) -> int:
        """A step starts: its mark (changes after it are the step's)."""
        await self.refresh()
        mark = self.generation if self._floor is None else min(self._floor, self.generation)
        self._marks[mark] += 1
        return mark

    async def changes_since(self, mark: int) -> Changes:
        """What changed after ``mark``, as the step's manifest records it."""
        await self.refresh()
        folded: Diff = {}
        for generation, diff in self._log:
            if generation > mark:
                for path, (old, new) in diff.items():
                    record(folded, path, old, new)
        return {path: new for path, (old, new) in folded.items() if old != new}

    def end(self, mark: int, *, saved: str | None) -> None:
        """A step that began at ``mark`` is over; ``saved`` is its manifest, if it
        succeeded (the workspace reflects it, and the leftovers now have an owner)."""
        self._marks[mark] -= 1
        if self._marks[mark] <= 0:
            del self._marks[mark]
        if saved is not None:
            self.reflect([saved])
            if self._floor is not None and mark <= self._floor:
                self._floor = None
        keep = min([*self._marks, self.generation] + ([self._floor] if self._floor is not None
                                                      else []))
        self._log = [(g, d) for g, d in self._log if g > keep]

    def wrote(self, written: Mapping[str, tuple[Entry | None, os.stat_result | None]]
              ) -> None:
        """The store restored ``written`` into the workspace (the lock held): index it as
        it is now, and drop the events those writes raised."""
        diff: Diff = {}
        for path, (entry, st) in written.items():
            record(diff, path, self.index.get(path), entry)
            self.index.set(path, entry, st)
        self.index.take_events()
        for path in written:
            directory, _, name = path.rpartition("/")
            names = self.index.dirty.get(directory)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.index.dirty[directory]
        if diff:
            self.generation += 1
            self._version += 1
            self._log.append((self.generation, diff))

    def reflect(self, digests: Sequence[str], *, dropped: Sequence[str] = ()) -> None:
        """The workspace now holds these manifests' changes (no longer ``dropped``'s)."""
        for digest in dropped:
            self.reflected.pop(digest, None)
        for digest in digests:
            self.reflected[digest] = None
        self._version += 1

    async def save_state(self) -> None:
        if self._version == self._saved_version:
            return
        version = self._version
        state = {"format": STATE_FORMAT, "reflected": list(self.reflected),
                 "index": self.index.dump()}
        await asyncio.to_thread(_write_state, self.state_file, state)
        self._saved_version = version

    async def close(self) -> None:
        async with self.lock:
            if self._loop is not None and self.index.inotify is not None:
                self._loop.remove_reader(self.index.inotify.fd)
            await self.save_state()
            self.index.close()


def _load_state(root: Path, state_file: Path) -> tuple[Index, dict[str, None]]:
    root.mkdir(parents=True, exist_ok=True)
    try:
        state: dict[str, Any] = json.loads(state_file.read_bytes())
        if state.get("format") != STATE_FORMAT:
            raise ValueError("unknown state format")
        return Index.load(root, state["index"]), dict.fromkeys(state["reflected"])
    except FileNotFoundError:
        return Index(root), {}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        logger.warning("workspace %s: state file unreadable (%s); scanning it anew",
                       root, exc)
        return Index(root), {}


def _write_state(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(json.dumps(state, separators=(",", ":")).encode())
    os.replace(temporary, path)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
