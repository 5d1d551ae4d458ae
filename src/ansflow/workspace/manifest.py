"""Manifests: what a step changed in the workspace, as path → entry (or deletion).

Pure: no I/O. A manifest is canonical JSON, stored as a blob under its own sha256, so
equal manifests are one blob and a manifest's digest names its content.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FILE, LINK, DIR = "f", "l", "d"
FORMAT = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """The content of one workspace path: a file (digest, size), a symbolic link
    (target) or a directory; ``mode`` holds the permission bits."""

    kind: str
    mode: int
    digest: str = ""
    size: int = 0
    target: str = ""

    def to_json(self) -> list[Any]:
        if self.kind == FILE:
            return [FILE, self.mode, self.digest, self.size]
        if self.kind == LINK:
            return [LINK, self.mode, self.target]
        return [DIR, self.mode]

    @classmethod
    def from_json(cls, raw: Any) -> Entry:
        if not isinstance(raw, list) or not raw or raw[0] not in (FILE, LINK, DIR):
            raise ValueError(f"malformed manifest entry {raw!r}")
        kind, mode = raw[0], int(raw[1]) & 0o7777
        if kind == FILE:
            digest = str(raw[2])
            if not is_digest(digest):
                raise ValueError(f"malformed digest {digest!r}")
            return cls(FILE, mode, digest, int(raw[3]))
        if kind == LINK:
            return cls(LINK, mode, target=str(raw[2]))
        return cls(DIR, mode)


Changes = dict[str, Entry | None]
"""Path → its content after the step, ``None`` for a path the step deleted."""


def is_digest(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def check_path(path: str) -> str:
    """``path`` if it is a clean relative POSIX path inside the workspace, else ValueError."""
    if (not path or path.startswith("/") or "\0" in path or path != posixpath.normpath(path)
            or path == "." or path.split("/")[0] == ".."):
        raise ValueError(f"path {path!r} is not a relative path inside the workspace")
    return path


def link_stays_inside(path: str, target: str) -> bool:
    """Whether a link at ``path`` with ``target`` resolves inside the workspace (textually:
    the links it may pass through are checked when they are restored themselves)."""
    if not target or target.startswith("/") or "\0" in target:
        return False
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return joined != ".." and not joined.startswith("../")


def encode(changes: Mapping[str, Entry | None]) -> bytes:
    entries = {path: None if entry is None else entry.to_json()
               for path, entry in sorted(changes.items())}
    return json.dumps({"format": FORMAT, "entries": entries}, separators=(",", ":"),
                      ensure_ascii=False).encode()


def decode(data: bytes) -> Changes:
    """A manifest from its bytes; every path is validated (a manifest from a store that
    someone else can write must not lead a restore out of the workspace)."""
    try:
        raw = json.loads(data)
        entries = raw["entries"]
        if raw.get("format") != FORMAT or not isinstance(entries, dict):
            raise ValueError("unknown manifest format")
        return {check_path(path): None if value is None else Entry.from_json(value)
                for path, value in entries.items()}
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed manifest: {exc}") from exc


def digest_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


EMPTY = encode({})
EMPTY_DIGEST = digest_of(EMPTY)


@dataclass(frozen=True, slots=True)
class ManifestRef:
    """A finished step's manifest, with what the restore order needs to know of it."""

    step: str
    digest: str
    completed_at: datetime | None
    depends_on: tuple[str, ...] = ()


def restore_order(refs: Sequence[ManifestRef]) -> list[ManifestRef]:
    """The order in which manifests apply, later ones winning on a shared path.

    A step always comes after its own dependencies (it saw their files and may have
    changed them). Among steps with no such relation (parallel branches), the one that
    completed last wins; equal completion times fall back to the step name. Every host
    computes the same order from the same record.
    """
    by_name = {ref.step: ref for ref in refs}
    waiting = {ref.step: {d for d in ref.depends_on if d in by_name} for ref in refs}
    dependents: dict[str, list[str]] = {name: [] for name in by_name}
    for name, deps in waiting.items():
        for dep in deps:
            dependents[dep].append(name)

    def key(name: str) -> tuple[datetime | str, str]:
        completed = by_name[name].completed_at
        return (completed.isoformat() if completed else "", name)

    ready = [(key(name), name) for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    order: list[ManifestRef] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(by_name[name])
        for child in dependents[name]:
            waiting[child].discard(name)
            if not waiting[child]:
                heapq.heappush(ready, (key(child), child))
    return order


def merge(manifests: Iterable[Mapping[str, Entry | None]]) -> Changes:
    """The combined effect of manifests applied in order (the last word on a path wins)."""
    merged: Changes = {}
    for changes in manifests:
        merged.update(changes)
    return merged


def blob_key(digest: str) -> str:
    return f"blobs/{digest[:2]}/{digest}"
