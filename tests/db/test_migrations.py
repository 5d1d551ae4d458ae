"""Migrations build the schema the models describe, on SQLite and on MariaDB (no drift);
a server with an old schema is refused until ``ansflow db upgrade`` runs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from ansflow.config import Settings
from ansflow.db.database import SCHEMA_REVISION, Database, alembic_config
from ansflow.db.models import Base, Pipeline
from ansflow.errors import ConfigurationError, SchemaOutdated
from tests.conftest import MYSQL_SERVER

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def command(tool: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ANSFLOW_DATABASE_URL": url}
    argv = [str(BIN / tool), *(["-c", str(REPO / "alembic.ini")] if tool == "alembic" else []),
            *args]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}\n{done.stderr}"
    return done


async def _admin(statement: str) -> None:
    engine = create_async_engine(f"{MYSQL_SERVER}/?charset=utf8mb4")
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def mariadb_url() -> AsyncIterator[str]:
    """A fresh, empty MariaDB database of this test's own."""
    name = f"ansflow_mig_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield f"{MYSQL_SERVER}/{name}?charset=utf8mb4"
    finally:
        await _admin(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(params=["sqlite", "mariadb"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"ansflow_mig_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield f"{MYSQL_SERVER}/{name}?charset=utf8mb4"
    finally:
        await _admin(f"DROP DATABASE IF EXISTS `{name}`")


async def downgrade(url: str, revision: str) -> None:
    """``alembic downgrade`` in this process (a subprocess costs a second of start-up)."""
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        alembic_command.downgrade(config, revision)

    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def drift(url: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_diff)
    finally:
        await engine.dispose()


async def tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(
                lambda c: c.dialect.get_table_names(c)))
    finally:
        await engine.dispose()


async def test_upgrade_head_builds_exactly_the_models(fresh_url: str) -> None:
    url = fresh_url
    command("alembic", url, "upgrade", "head")
    assert await tables(url) == {*Base.metadata.tables, "alembic_version"}
    assert await drift(url) == [], "models and migrations disagree"
    # every migration can be undone and redone
    await downgrade(url, "base")
    assert await tables(url) == {"alembic_version"}
    db = Database(Settings(database_url=url))
    try:
        await db.upgrade()
    finally:
        await db.dispose()
    assert await drift(url) == []


def test_the_quick_schema_check_knows_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [SCHEMA_REVISION], "set SCHEMA_REVISION to the new migration's revision"


async def test_a_server_refuses_an_outdated_schema_until_db_upgrade(mariadb_url: str) -> None:
    db = Database(Settings(database_url=mariadb_url))
    try:
        with pytest.raises(SchemaOutdated) as caught:
            await db.ensure_schema(auto_upgrade=False)
        assert "run `ansflow db upgrade`" in caught.value.message
        assert await tables(mariadb_url) == set(), "checking must not create anything"

        done = command("ansflow", mariadb_url, "db", "upgrade")
        assert "database is up to date" in done.stderr
        await db.ensure_schema(auto_upgrade=False)
        assert not await db.pending_migrations()

        await downgrade(mariadb_url, "-1")
        with pytest.raises(SchemaOutdated):
            await db.ensure_schema(auto_upgrade=False)
        command("ansflow", mariadb_url, "db", "upgrade")
        await db.ensure_schema(auto_upgrade=False)
        assert await drift(mariadb_url) == []
    finally:
        await db.dispose()


async def test_timestamps_keep_microseconds(fresh_url: str) -> None:
    db = Database(Settings(database_url=fresh_url))
    try:
        await db.upgrade()
        written = datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
        async with db.session() as session:
            session.add(Pipeline(name="micro", definition="{}", created_at=written,
                                 updated_at=written.replace(microsecond=1)))
            await session.commit()
        async with db.session() as session:
            pipeline = (await session.execute(text(
                "SELECT id FROM pipeline WHERE name = 'micro'"))).scalar_one()
            row = await session.get(Pipeline, pipeline)
            assert row is not None
            assert row.created_at == written and row.created_at.tzinfo is not None
            assert row.updated_at.microsecond == 1
        if not db.is_sqlite:
            async with db.session() as session:
                precision = (await session.execute(text(
                    "SELECT COLUMN_NAME, DATETIME_PRECISION FROM information_schema.COLUMNS "
                    "WHERE TABLE_SCHEMA = DATABASE() AND DATA_TYPE = 'datetime'"))).all()
            assert precision and {p for _, p in precision} == {6}, precision
    finally:
        await db.dispose()


async def test_a_schema_from_a_newer_version_is_named_not_a_traceback(
        sqlite_settings: Settings) -> None:
    db = Database(sqlite_settings)
    try:
        await db.upgrade()
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
        with pytest.raises(ConfigurationError, match="revision from_the_future, which this"):
            await db.upgrade()
    finally:
        await db.dispose()
