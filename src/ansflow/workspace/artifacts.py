"""Artifacts: workspace files a step keeps, stored as blobs (never on a worker's disk)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from ansflow.steps.files import glob_files
from ansflow.workspace import files
from ansflow.workspace.backend import StoreError, Upload
from ansflow.workspace.manifest import FILE, LINK, blob_key
from ansflow.workspace.store import WorkspaceStore
from ansflow.workspace.tracker import Workspace


@dataclass(slots=True)
class Kept:
    rows: list[dict[str, str | int]] = field(default_factory=list)
    """``{path, size, sha256}`` per file, in path order."""
    outside: list[str] = field(default_factory=list)
    """Matches that are links leading out of the workspace (not kept)."""


def _match(workspace: Workspace, patterns: Sequence[str], also: Sequence[str]
           ) -> tuple[list[tuple[str, str]], list[str]]:
    """(artifact path, the workspace file holding its content) for each match; the
    matches that lead out of the workspace."""
    root = workspace.root
    matches = glob_files(root, patterns, root)
    paths = {path.relative_to(root).as_posix() for path in matches.files} | set(also)
    found = [(path, source) for path in sorted(paths)
             if (source := _file_behind(workspace, path)) is not None]
    return found, matches.labels(root)


async def keep_artifacts(store: WorkspaceStore, workspace: Workspace,
                         patterns: Sequence[str], also: Sequence[str]) -> Kept:
    """Store the files matching ``patterns`` (and the paths ``also``) as blobs."""
    await workspace.refresh()
    matched, outside = await asyncio.to_thread(_match, workspace, patterns, also)
    kept = Kept(outside=outside)
    uploads: dict[str, Upload] = {}
    with files.Directories(workspace.root) as dirs:
        for path, source in matched:
            entry = workspace.index.get(source)
            if entry is None or entry.kind != FILE:
                continue
            kept.rows.append({"path": path, "size": entry.size, "sha256": entry.digest})
            uploads.setdefault(entry.digest, Upload(
                blob_key(entry.digest), _reader(dirs, source), entry.digest))
        try:
            await store.backend.upload(list(uploads.values()))
        except OSError as exc:
            raise StoreError(f"keeping artifacts: a file vanished while it was being saved "
                             f"({exc})") from exc
    return kept


def _file_behind(workspace: Workspace, path: str) -> str | None:
    """``path``, or for a link the workspace file it leads to (never a path outside)."""
    entry = workspace.index.get(path)
    if entry is None or entry.kind != LINK:
        return path
    root = workspace.root.resolve()
    real = (root / path).resolve()
    return real.relative_to(root).as_posix() if root in real.parents else None


def _reader(dirs: files.Directories, path: str) -> files.Reader:
    return lambda: files.read_file(dirs, path)
