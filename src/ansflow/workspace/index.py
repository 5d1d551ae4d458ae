"""The index of a workspace: every path's ``lstat`` fingerprint and content, and a scan
that finds what changed since the last one.

Change detection is stat-based, as in git: a path whose size, mtime (ns), inode, kind and
mode equal the index's is unchanged and is not read; only the others are hashed. inotify
narrows *which* paths a scan looks at to the directory entries that had events since the
last scan, so a scan of an unchanged workspace costs one ``read`` of the event queue no
matter how many files it holds. Without inotify, after a queue overflow or a directory
moved within the workspace, the next scan looks at every path.

A file modified twice within the filesystem's timestamp granularity can keep its size and
mtime; an entry written less than ``RACY_NS`` before its scan is therefore "racy" and is
hashed again the next time its name has an event (git's racy-git rule).

All methods block (call them in a thread) except ``take_events``, which runs on the
event loop's thread and only reads the event queue.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansflow.workspace.inotify import IN_IGNORED, IN_MOVE_SELF, IN_Q_OVERFLOW, Inotify
from ansflow.workspace.manifest import DIR, FILE, LINK, Entry

logger = logging.getLogger(__name__)
RACY_NS = 100_000_000
CHUNK = 1 << 20

Diff = dict[str, tuple[Entry | None, Entry | None]]
"""Path → (content before, content after) over one or more scans."""


@dataclass(slots=True)
class Node:
    entry: Entry
    size: int
    mtime_ns: int
    ino: int
    racy: bool

    def same(self, st: os.stat_result, kind: str) -> bool:
        if self.racy or kind != self.entry.kind or self.ino != st.st_ino:
            return False
        if self.entry.mode != stat.S_IMODE(st.st_mode):
            return False
        return kind == DIR or (self.size == st.st_size and self.mtime_ns == st.st_mtime_ns)

    def to_json(self) -> list[Any]:
        return [self.entry.to_json(), self.size, self.mtime_ns, self.ino, self.racy]

    @classmethod
    def from_json(cls, raw: list[Any]) -> Node:
        return cls(Entry.from_json(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]),
                   bool(raw[4]))


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def kind_of(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISLNK(mode):
        return LINK
    if stat.S_ISDIR(mode):
        return DIR
    return None  # sockets, fifos and devices are not workspace content


def record(diff: Diff, path: str, old: Entry | None, new: Entry | None) -> None:
    """Fold one change into ``diff``, keeping the earliest "before"."""
    first = diff[path][0] if path in diff else old
    diff[path] = (first, new)


def hash_file(path: Path) -> tuple[str, int] | None:
    """sha256 and size of the regular file at ``path`` (not through a link); None if it
    vanished or is no longer a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class Index:
    """What a workspace held at its last scan: directory → name → ``Node``."""

    def __init__(self, root: Path, nodes: dict[str, dict[str, Node]] | None = None) -> None:
        self.root = root
        self.nodes: dict[str, dict[str, Node]] = nodes if nodes is not None else {"": {}}
        self.inotify: Inotify | None = None
        self.wds: dict[int, str] = {}
        self.dirty: dict[str, set[str]] = {}
        self.full = True
        """The next scan looks at every path (first scan, or events were lost)."""
        self.blind = False
        """Some directory could not be watched: every scan looks everywhere."""

    def watch(self) -> None:
        """Start watching (before the first scan, which adds a watch per directory)."""
        try:
            self.inotify = Inotify()
        except OSError as exc:  # e.g. fs.inotify.max_user_instances (128) reached
            logger.warning("workspace %s: no inotify (%s); every snapshot looks at every path",
                           self.root, exc)
            self.inotify = None

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None

    def take_events(self) -> None:
        """Fold queued inotify events into ``dirty`` (event loop thread)."""
        if self.inotify is None or self.blind:
            self.full = True
            return
        for event in self.inotify.read():
            if event.mask & (IN_Q_OVERFLOW | IN_MOVE_SELF):
                self.full = True
            elif event.mask & IN_IGNORED:
                self.wds.pop(event.wd, None)
            elif event.name:
                directory = self.wds.get(event.wd)
                if directory is None:
                    self.full = True
                else:
                    self.dirty.setdefault(directory, set()).add(event.name)

    def take_work(self) -> tuple[bool, dict[str, set[str]]]:
        """What the next scan must look at (event loop thread, after ``take_events``)."""
        full, dirty = self.full, self.dirty
        self.full, self.dirty = False, {}
        return full, dirty

    def scan(self, full: bool, dirty: dict[str, set[str]]) -> Diff:
        """Bring the index up to date with the disk; what changed (net of no-ops)."""
        diff: Diff = {}
        now = time.time_ns()
        if full:
            self._scan_tree("", diff, now)
        else:
            for directory, names in dirty.items():
                if directory in self.nodes:
                    for name in names:
                        self._check(directory, name, diff, now)
        return {path: (old, new) for path, (old, new) in diff.items() if old != new}

    def _watch_dir(self, directory: str) -> None:
        if self.inotify is None or self.blind:
            return
        try:
            self.wds[self.inotify.add(str(self.root / directory))] = directory
        except FileNotFoundError:
            pass  # it went away meanwhile: its parent's events tell
        except OSError:  # out of watches: events no longer cover the workspace
            self.blind = True

    def _scan_tree(self, top: str, diff: Diff, now: int) -> None:
        stack = [top]
        while stack:
            directory = stack.pop()
            self._watch_dir(directory)  # before listing: later changes raise events
            known = self.nodes.setdefault(directory, {})
            try:
                with os.scandir(self.root / directory) as listing:
                    entries = [(e.name, e.stat(follow_symlinks=False)) for e in listing]
            except (FileNotFoundError, NotADirectoryError):
                continue
            seen = set()
            for name, st in entries:
                seen.add(name)
                if self._visit(directory, name, st, diff, now) is not None:
                    stack.append(join(directory, name))
            for name in set(known) - seen:
                self._forget(directory, name, diff)

    def _check(self, directory: str, name: str, diff: Diff, now: int) -> None:
        try:
            st = os.lstat(self.root / directory / name)
        except (FileNotFoundError, NotADirectoryError):
            self._forget(directory, name, diff)
            return
        new_dir = self._visit(directory, name, st, diff, now)
        if new_dir is not None and new_dir not in self.nodes:
            self._scan_tree(new_dir, diff, now)

    def _visit(self, directory: str, name: str, st: os.stat_result, diff: Diff,
               now: int) -> str | None:
        """Compare one path with the index; the path if it is a directory."""
        kind = kind_of(st.st_mode)
        path = join(directory, name)
        old = self.nodes[directory].get(name)
        if kind is None:
            self._forget(directory, name, diff)
            return None
        if old is not None and old.same(st, kind):
            return path if kind == DIR else None
        if old is not None and (old.entry.kind != kind or (kind == DIR and old.ino != st.st_ino)):
            self._forget(directory, name, diff)  # replaced: the old subtree is gone
            old = None
        entry = self._entry(path, kind, st)
        if entry is None:
            self._forget(directory, name, diff)
            return None
        self.nodes[directory][name] = Node(entry, st.st_size, st.st_mtime_ns, st.st_ino,
                                           st.st_mtime_ns >= now - RACY_NS)
        record(diff, path, old.entry if old else None, entry)
        return path if kind == DIR else None

    def _entry(self, path: str, kind: str, st: os.stat_result) -> Entry | None:
        mode = stat.S_IMODE(st.st_mode)
        if kind == DIR:
            return Entry(DIR, mode)
        if kind == LINK:
            try:
                return Entry(LINK, mode, target=os.readlink(self.root / path))
            except (FileNotFoundError, OSError):
                return None
        hashed = hash_file(self.root / path)
        return None if hashed is None else Entry(FILE, mode, hashed[0], hashed[1])

    def _forget(self, directory: str, name: str, diff: Diff) -> None:
        old = self.nodes.get(directory, {}).pop(name, None)
        if old is None:
            return
        path = join(directory, name)
        record(diff, path, old.entry, None)
        if old.entry.kind == DIR:
            prefix = path + "/"
            for sub in [d for d in self.nodes if d == path or d.startswith(prefix)]:
                for child, node in self.nodes.pop(sub).items():
                    record(diff, join(sub, child), node.entry, None)

    def set(self, path: str, entry: Entry | None, st: os.stat_result | None) -> None:
        """Record a path the store itself just wrote (or removed) in the workspace."""
        directory, _, name = path.rpartition("/")
        if entry is None or st is None:
            self._forget(directory, name, {})
            return
        self.nodes.setdefault(directory, {})[name] = Node(
            entry, st.st_size, st.st_mtime_ns, st.st_ino, False)
        if entry.kind == DIR:
            self.nodes.setdefault(path, {})
            self._watch_dir(path)

    def get(self, path: str) -> Entry | None:
        directory, _, name = path.rpartition("/")
        node = self.nodes.get(directory, {}).get(name)
        return None if node is None else node.entry

    def dump(self) -> dict[str, dict[str, list[Any]]]:
        return {d: {n: node.to_json() for n, node in names.items()}
                for d, names in self.nodes.items()}

    @classmethod
    def load(cls, root: Path, raw: dict[str, dict[str, list[Any]]]) -> Index:
        return cls(root, {d: {n: Node.from_json(v) for n, v in names.items()}
                          for d, names in raw.items()})
