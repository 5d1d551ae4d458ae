"""Everything an execution or a request needs, opened inside the loop that uses it."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ansflow.config import Settings
from ansflow.db.database import Database
from ansflow.queue.bus import EventBus, open_bus
from ansflow.trust.private import private_dir
from ansflow.workspace.store import WorkspaceStore


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class Resources:
    settings: Settings
    db: Database
    worker_id: str
    bus: EventBus
    """Committed changes, pushed to live followers (Redis pub/sub or in-process)."""
    store: WorkspaceStore
    """The workspace store (workspaces, artifacts, caches)."""
    running: set[int] = field(default_factory=set)
    """Executions this process is running: a second job for one of them (a wake-up, a
    sweeper's re-dispatch) must not run it again under the same worker id."""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, migrate: bool | None = None
                   ) -> AsyncIterator[Resources]:
        """Open the database (and migrate SQLite, or check a server's schema).

        ``migrate``: None = the default (SQLite migrates itself, a server must be current);
        True = apply migrations; False = do not look at the schema at all.
        """
        for state in (settings.workspace_root, settings.artifact_root):
            private_dir(state)
        db = Database(settings)
        bus = open_bus(settings)
        store = WorkspaceStore.from_settings(settings)
        try:
            if migrate is True:
                await db.upgrade()
            elif migrate is None:
                await db.ensure_schema(auto_upgrade=settings.is_sqlite)
            yield cls(settings, db, settings.worker_id or default_worker_id(), bus, store)
        finally:
            await store.close()
            await bus.close()
            await db.dispose()
