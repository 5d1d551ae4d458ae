"""Retention: artifacts older than ``ANSFLOW_ARTIFACT_RETENTION_DAYS`` are forgotten,
cache entries older than ``ANSFLOW_CACHE_RETENTION_DAYS`` are removed, and then every
blob no longer referenced (by an artifact, a cache entry, or the manifest of a step of an
execution that is running or ended within the artifact retention) is deleted.

Blobs younger than ``GRACE`` are kept whatever refers to them: a step saving right now
has uploaded blobs whose manifest is not recorded yet.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from ansflow.config import Settings
from ansflow.db.artifacts import artifact_digests, expire_artifacts, manifest_digests
from ansflow.db.database import Database
from ansflow.status import utcnow
from ansflow.workspace.backend import StoreError
from ansflow.workspace.manifest import FILE
from ansflow.workspace.store import WorkspaceStore

logger = logging.getLogger(__name__)
GRACE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Collected:
    artifacts: int
    caches: int
    blobs: int


async def collect_garbage(db: Database, store: WorkspaceStore, settings: Settings,
                          now: datetime | None = None) -> Collected:
    now = now or utcnow()
    kept_since = now - timedelta(days=settings.artifact_retention_days)
    async with db.session() as session:
        expired = await expire_artifacts(session, kept_since)
        await session.commit()
        live = await artifact_digests(session)
        manifests = await manifest_digests(session, kept_since)
    caches = await _expire_caches(store, now - timedelta(days=settings.cache_retention_days))
    manifests |= caches[1]
    for digest in manifests:
        live.add(digest)
        try:
            changes = await store.manifest(digest)
        except StoreError:
            continue
        live.update(e.digest for e in changes.values() if e is not None and e.kind == FILE)
    unused = [item.key for item in await store.backend.listing("blobs/")
              if item.key.rpartition("/")[2] not in live and item.modified < now - GRACE]
    await store.backend.delete(unused)
    if expired or caches[0] or unused:
        logger.info("store retention: %s artifact records, %s cache entries, %s blobs removed",
                    expired, caches[0], len(unused))
    return Collected(expired, caches[0], len(unused))


async def _expire_caches(store: WorkspaceStore, before: datetime) -> tuple[int, set[str]]:
    """Remove entries created before ``before``; the manifests of those kept."""
    entries = await store.backend.listing("caches/")
    old = [e.key for e in entries if e.modified < before]
    await store.backend.delete(old)
    manifests = set()
    for entry in entries:
        if entry.modified >= before:
            try:
                manifests.add(str(json.loads(await store.backend.get_bytes(entry.key))
                                  ["manifest"]))
            except (StoreError, ValueError, KeyError, TypeError):
                continue
    return len(old), manifests



