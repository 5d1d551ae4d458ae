"""The workspace store's two calls around a step, whichever worker runs it:

* ``before_step(workspace, needs)``: make the workspace hold what the step's dependencies
  left (``needs``: the manifests of every step it depends on, directly or not), writing
  only the paths that are missing or different; a workspace that already reflects all of
  them (the same host ran or restored them) is not touched. Then mark the step's start.
* ``after_step(start)``: save what changed since the start (new blobs, then the manifest)
  and answer the manifest's digest, which the step's record keeps.

Two parallel branches that changed the same path: the one that completed last wins (see
``manifest.restore_order``); a step always wins over its own dependencies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ansflow.config import Settings
from ansflow.workspace import files
from ansflow.workspace.backend import (
    Backend,
    ChangedWhileSaving,
    Opener,
    StoreError,
    Upload,
    open_backend,
)
from ansflow.workspace.index import Index
from ansflow.workspace.manifest import (
    EMPTY_DIGEST,
    FILE,
    Changes,
    Entry,
    ManifestRef,
    blob_key,
    decode,
    digest_of,
    encode,
    merge,
    restore_order,
)
from ansflow.workspace.tracker import Workspace

logger = logging.getLogger(__name__)
MANIFEST_CACHE = 256
WRITERS = 8
# a sibling step writing a shared file while this one is saved: read the changes again
SAVE_RETRY_DELAYS = (0.05, 0.1, 0.2, 0.4)


@dataclass(frozen=True, slots=True)
class StepStart:
    workspace: Workspace
    mark: int
    restored: Restored


@dataclass(frozen=True, slots=True)
class Restored:
    files: int = 0
    bytes: int = 0
    deleted: int = 0
    skipped_links: list[str] = field(default_factory=list)
    """Links a manifest holds that would lead out of the workspace (not made)."""


@dataclass(frozen=True, slots=True)
class Saved:
    digest: str
    paths: int
    uploaded_bytes: int


class WorkspaceStore:
    """A process's handle on the store: the backend, and the workspaces this worker has
    open (one per execution it holds, watched until ``release``)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._open: dict[Path, Workspace] = {}
        self._opening: dict[Path, asyncio.Lock] = {}
        self._holders: Counter[Path] = Counter()
        self._manifests: dict[str, Changes] = {EMPTY_DIGEST: {}}
        self._gc_at: float | None = None

    def gc_due(self, interval: float) -> bool:
        """Whether retention should run now (and, if so, note that it does)."""
        now = time.monotonic()
        if self._gc_at is not None and now - self._gc_at < interval:
            return False
        self._gc_at = now
        return True

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkspaceStore:
        return cls(open_backend(settings.store_location,
                                endpoint_url=settings.store_s3_endpoint_url,
                                region=settings.store_s3_region))

    async def workspace(self, root: Path) -> Workspace:
        """The open workspace at ``root`` (its state file beside it)."""
        lock = self._opening.setdefault(root, asyncio.Lock())
        async with lock:
            if root not in self._open:
                state = root.with_name(f"{root.name}.state.json")
                self._open[root] = await Workspace.open(root, state)
            return self._open[root]

    def hold(self, root: Path) -> None:
        """One more user of the workspace at ``root`` (an execution's holder, a step
        handed to this worker): it stays open until the last one calls ``release``."""
        self._holders[root] += 1

    async def release(self, root: Path) -> None:
        """A user left; when it was the last (the execution left this worker): stop
        watching, keep the state file."""
        self._holders[root] -= 1
        if self._holders[root] > 0:
            return
        del self._holders[root]
        workspace = self._open.pop(root, None)
        self._opening.pop(root, None)
        if workspace is not None:
            await workspace.close()

    async def close(self) -> None:
        for root in list(self._open):
            self._holders[root] = 0
            await self.release(root)
        await self.backend.close()

    async def manifest(self, digest: str) -> Changes:
        cached = self._manifests.get(digest)
        if cached is not None:
            return cached
        data = await self.backend.get_bytes(blob_key(digest))
        if digest_of(data) != digest:
            raise StoreError(f"manifest {digest} in the store is corrupt")
        try:
            changes = decode(data)
        except ValueError as exc:
            raise StoreError(f"manifest {digest}: {exc}") from exc
        if len(self._manifests) >= MANIFEST_CACHE:
            self._manifests.pop(next(iter(self._manifests)))
        self._manifests[digest] = changes
        return changes

    async def before_step(self, root: Path, needs: Sequence[ManifestRef]) -> StepStart:
        workspace = await self.workspace(root)
        restored = await self.restore(workspace, needs)
        return StepStart(workspace, await workspace.begin(), restored)

    async def after_step(self, start: StepStart) -> Saved:
        """Save what changed since ``start``. A file another running step of the execution
        writes at that moment (steps share the workspace) changes under the hash: the
        changes are read again, a few times, before that counts as an error."""
        for delay in SAVE_RETRY_DELAYS:
            changes = await start.workspace.changes_since(start.mark)
            try:
                return await self.save(start.workspace, changes)
            except StoreError as exc:
                if not isinstance(exc.__cause__, ChangedWhileSaving):
                    raise
                await asyncio.sleep(delay)
        changes = await start.workspace.changes_since(start.mark)
        return await self.save(start.workspace, changes)

    async def restore(self, workspace: Workspace, needs: Sequence[ManifestRef]) -> Restored:
        ordered = [ref.digest for ref in restore_order(needs)]
        missing = [d for d in ordered if d not in workspace.reflected and d != EMPTY_DIGEST]
        if not missing:
            return Restored()
        manifests = {d: await self.manifest(d) for d in dict.fromkeys(ordered)}
        merged = merge(manifests[d] for d in ordered)
        wanted = {path: merged[path] for d in missing for path in manifests[d]}
        restored = await self.apply(workspace, wanted)
        await self._reflect(workspace, ordered, set(wanted))
        return restored

    async def apply(self, workspace: Workspace, wanted: Mapping[str, Entry | None]
                    ) -> Restored:
        """Make the workspace hold ``wanted`` (None: absent), writing only what differs."""
        async with workspace.lock:
            await workspace.refresh_locked()
            todo = {path: entry for path, entry in wanted.items()
                    if workspace.index.get(path) != entry}
            if not todo:
                return Restored()
            keys = sorted({blob_key(e.digest) for e in todo.values() if e and e.kind == FILE})
            async with self.backend.staged(keys) as blobs:
                written, restored = await asyncio.to_thread(
                    _apply, workspace.root, workspace.index, todo, blobs)
            workspace.wrote(written)
        if written:
            await workspace.save_state()
        return restored

    async def _reflect(self, workspace: Workspace, applied: Iterable[str],
                       touched: set[str]) -> None:
        """The workspace now reflects ``applied``; a manifest it reflected before and whose
        paths were just overwritten no longer holds."""
        applied = list(applied)
        dropped = [d for d in list(workspace.reflected) if d not in applied
                   and touched & (await self.manifest(d)).keys()]
        workspace.reflect(applied, dropped=dropped)

    async def save(self, workspace: Workspace, changes: Changes) -> Saved:
        if not changes:
            return Saved(EMPTY_DIGEST, 0, 0)
        data = encode(changes)
        digest = digest_of(data)
        by_digest = {e.digest: path for path, e in sorted(changes.items())
                     if e is not None and e.kind == FILE}
        with files.Directories(workspace.root) as dirs:
            uploads = [Upload(blob_key(d), _reader(dirs, path), d)
                       for d, path in by_digest.items()]
            try:
                sent = await self.backend.upload(uploads)
            except (OSError, ChangedWhileSaving) as exc:
                raise StoreError(f"saving the workspace: a file changed or vanished while "
                                 f"it was being saved ({exc})") from exc
        await self.backend.put_bytes(blob_key(digest), data)
        self._manifests[digest] = changes
        return Saved(digest, len(changes), sent)


def _reader(dirs: files.Directories, path: str) -> files.Reader:
    return lambda: files.read_file(dirs, path)


def _apply(root: Path, index: Index, todo: Mapping[str, Entry | None], blobs: Opener
           ) -> tuple[dict[str, tuple[Entry | None, os.stat_result | None]], Restored]:
    """Deletions deepest first; then directories and links shallowest first; then files,
    several at once (creating files is most of a restore's cost, and mostly the kernel's)."""
    written: dict[str, tuple[Entry | None, os.stat_result | None]] = {}
    order = sorted(todo, key=lambda p: (p.count("/"), p))
    skipped, plain = [], []
    with files.Directories(root) as dirs:
        for path in reversed(order):
            if todo[path] is None and index.get(path) is not None:
                files.delete_path(dirs, path)
                written[path] = (None, None)
        for path in order:
            entry = todo[path]
            if entry is not None and entry.kind == FILE:
                dirs.get(path.rpartition("/")[0], create=True)
                plain.append((path, entry))
            elif entry is not None:
                st = files.write_entry(dirs, path, entry, blobs)
                written[path] = (entry, st)
                if st is None:
                    skipped.append(path)
        with ThreadPoolExecutor(WRITERS) as pool:
            stats = list(pool.map(lambda item: files.write_entry(dirs, item[0], item[1], blobs),
                                  plain))
    written.update((path, (entry, st)) for (path, entry), st in zip(plain, stats, strict=True))
    return ({p: w for p, w in written.items() if p not in skipped},
            Restored(len(plain), sum(e.size for _, e in plain),
                     sum(1 for e, _ in written.values() if e is None), skipped))
