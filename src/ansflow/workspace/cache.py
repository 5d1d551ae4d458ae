"""Caches (``cache: {key, paths, restore_keys}``).

An entry is a manifest of the workspace paths matching ``paths`` (directories with all
they hold), kept under ``caches/<pipeline id>/k-<key, percent-encoded>``; the encoding
keeps prefixes, so "the newest entry whose key starts with a restore key" is one listing.
Entries are written once, by the first execution that misses the key and succeeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote

from ansflow.spec.glob import compile_glob
from ansflow.status import utcnow
from ansflow.workspace.backend import StoreError
from ansflow.workspace.index import Index, join
from ansflow.workspace.manifest import DIR, Changes, is_digest
from ansflow.workspace.store import Restored, WorkspaceStore
from ansflow.workspace.tracker import Workspace

MAX_NAME = 240


class CacheKeyError(ValueError):
    """A rendered key or restore key that cannot name an entry."""


def entry_name(pipeline_id: int, key: str) -> str:
    name = "k-" + quote(key, safe="")
    if not key or len(name) > MAX_NAME:
        raise CacheKeyError(f"cache key {key[:80]!r} is empty or too long (at most "
                            f"{MAX_NAME} characters once URL-encoded)")
    return f"caches/{pipeline_id}/{name}"


@dataclass(frozen=True, slots=True)
class CacheHit:
    key: str
    hit: str | None
    """``exact``, ``prefix`` or None (a miss)."""
    restored_key: str | None
    restored: Restored

    def public(self) -> dict[str, str | None]:
        return {"key": self.key, "hit": self.hit, "restored_key": self.restored_key}


async def restore_cache(store: WorkspaceStore, workspace: Workspace, pipeline_id: int,
                        key: str, restore_keys: list[str]) -> CacheHit:
    exact = entry_name(pipeline_id, key)
    found = await _read(store, exact)
    hit = "exact" if found else None
    for prefix in restore_keys if found is None else []:
        listed = await store.backend.listing(entry_name(pipeline_id, prefix))
        if listed:
            newest = max(listed, key=lambda item: (item.modified, item.key))
            found, hit = await _read(store, newest.key), "prefix"
            if found:
                break
    if found is None:
        return CacheHit(key, None, None, Restored())
    restored_key, digest = found
    changes = await store.manifest(digest)
    return CacheHit(key, hit, restored_key, await store.apply(workspace, changes))


async def _read(store: WorkspaceStore, name: str) -> tuple[str, str] | None:
    try:
        data = json.loads(await store.backend.get_bytes(name))
    except StoreError:
        return None
    except ValueError as exc:
        raise StoreError(f"cache entry {name!r} is corrupt: {exc}") from exc
    if not isinstance(data, dict) or not is_digest(str(data.get("manifest"))):
        raise StoreError(f"cache entry {name!r} is corrupt")
    return str(data.get("key")), str(data["manifest"])


async def save_cache(store: WorkspaceStore, workspace: Workspace, pipeline_id: int,
                     key: str, paths: list[str]) -> int:
    """Keep the paths matching ``paths`` under ``key``; how many paths it holds."""
    name = entry_name(pipeline_id, key)
    await workspace.refresh()
    changes = select(workspace.index, paths)
    saved = await store.save(workspace, changes)
    entry = {"key": key, "manifest": saved.digest, "created_at": utcnow().isoformat(),
             "paths": saved.paths}
    await store.backend.put_bytes(name, json.dumps(entry).encode())
    return saved.paths


def select(index: Index, patterns: list[str]) -> Changes:
    """Every indexed path matching a pattern, or under a directory that matches one."""
    globs = [compile_glob(p.rstrip("/")) for p in patterns]
    chosen: Changes = {}
    inside: set[str] = set()
    for directory in sorted(index.nodes, key=lambda d: d.count("/") if d else -1):
        inherited = directory in inside
        for name, node in index.nodes[directory].items():
            path = join(directory, name)
            if inherited or any(g.fullmatch(path) for g in globs):
                chosen[path] = node.entry
                if node.entry.kind == DIR:
                    inside.add(path)
    return chosen
