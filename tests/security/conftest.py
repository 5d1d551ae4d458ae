from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ansflow.config import Settings
from ansflow.db.database import Database
from tests.conftest import MYSQL_SERVER, REDIS_URL


async def _admin(statement: str) -> None:
    engine = create_async_engine(f"{MYSQL_SERVER}/?charset=utf8mb4")
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def own_database(settings: Settings) -> AsyncIterator[Settings]:
    """``settings`` on a migrated MariaDB database of this test's own, for tests that act
    on every row of a table (``ansflow secrets rotate-key`` re-encrypts every secret)."""
    name = f"ansflow_own_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    own = settings.model_copy(update={"database_url": f"{MYSQL_SERVER}/{name}?charset=utf8mb4"})
    db = Database(own)
    try:
        await db.upgrade()
    finally:
        await db.dispose()
    try:
        yield own
    finally:
        await _admin(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture
def arq_settings(settings: Settings) -> Settings:
    """MariaDB + Redis with a queue of this test's own; short leases."""
    return settings.model_copy(update={"redis_url": REDIS_URL, "execution_backend": "arq",
                                       "lease_seconds": 3.0})
