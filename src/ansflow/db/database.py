"""The database handle: one async engine per event loop, plus schema migrations."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, event, exc, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ansflow.config import Settings
from ansflow.db.models import Base
from ansflow.errors import ConfigurationError, SchemaOutdated, map_errors
from ansflow.trust.private import private_file

if TYPE_CHECKING:
    from alembic.config import Config

SCHEMA_REVISION = "dispatch_0001"
"""The newest migration (a test holds it to alembic's head): a database at this revision
is checked with one query instead of loading alembic and its migration scripts."""


def migrations_dir() -> Path:
    return Path(str(files("ansflow.migrations")))


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url:
        config.set_main_option("sqlalchemy.url", url)
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


IDLE_WRITE_MIN_SECONDS = 10


def idle_write_timeout(settings: Settings) -> int:
    """Seconds a write transaction may sit idle before MariaDB ends it: a lease, and no
    less than 10 s. Only a stopped process (SIGSTOP, a paused VM) leaves one idle that
    long; its lease is gone by then, and the row locks it holds must not keep the worker
    that takes over waiting for InnoDB's lock timeout (50 s), then failing."""
    return max(IDLE_WRITE_MIN_SECONDS, math.ceil(settings.lease_seconds))


def _mariadb_session(dialect: Dialect, idle_write_seconds: int) -> Callable[[Any, Any], None]:
    def configure(dbapi_connection: Any, _record: Any) -> None:
        # the dialect knows the server by now: it reads it on the first connection,
        # before this listener runs
        if getattr(dialect, "is_mariadb", False):  # MySQL has no such limit
            cursor = dbapi_connection.cursor()
            cursor.execute("SET SESSION idle_write_transaction_timeout = %s",
                           (idle_write_seconds,))
            cursor.close()
    return configure


class Database:
    """Engine and session factory. Create it inside the event loop that will use it
    and ``dispose`` it there (an engine cannot cross loops)."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.database_url
        self.is_sqlite = settings.is_sqlite
        try:
            self._create_engine(settings)
        except (exc.ArgumentError, ImportError) as error:
            hint = " (pip install 'ansflow[mysql]')" if "mysql" in self.url else ""
            raise ConfigurationError(f"ANSFLOW_DATABASE_URL cannot be used: {error}{hint}"
                                     ) from error
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    def _create_engine(self, settings: Settings) -> None:
        if self.is_sqlite:
            _ensure_sqlite_file(self.url)
            # one connection: SQLite has one writer at a time, and queueing for the
            # connection in asyncio is far cheaper than SQLite's sleeping busy handler
            self.engine: AsyncEngine = create_async_engine(self.url, pool_size=1,
                                                           max_overflow=0, pool_timeout=300)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(
                self.url, pool_pre_ping=True, pool_recycle=1800,
                pool_size=settings.database_pool_size, max_overflow=settings.database_pool_size,
            )
            event.listen(self.engine.sync_engine, "connect",
                         _mariadb_session(self.engine.dialect, idle_write_timeout(settings)))

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def upgrade(self) -> None:
        """Apply every pending migration, then check that no text can be lost."""
        with map_errors("migrating the database"):
            async with self.engine.begin() as connection:
                await connection.run_sync(_upgrade)
        await self.check_charset()

    async def check_charset(self) -> None:
        """On MySQL/MariaDB, refuse (``ConfigurationError``) a connection or a table column
        that is not utf8mb4: it would lose characters (emoji, CJK text) or fail on them."""
        if self.is_sqlite:
            return
        with map_errors("checking the database's character set"):
            async with self.engine.connect() as connection:
                session = (await connection.execute(_SESSION_CHARSET)).one()
                columns = (await connection.execute(
                    _NARROW_COLUMNS, {"tables": sorted(Base.metadata.tables)})).all()
        if problem := charset_problem(tuple(session), [tuple(c) for c in columns]):
            raise ConfigurationError(problem)

    async def pending_migrations(self) -> bool:
        with map_errors("checking the database schema"):
            async with self.engine.connect() as connection:
                try:
                    version = await connection.execute(
                        text("SELECT version_num FROM alembic_version"))
                    if {row[0] for row in version} == {SCHEMA_REVISION}:
                        return False
                except exc.DBAPIError:  # no alembic_version table yet
                    await connection.rollback()
                return await connection.run_sync(_is_outdated)

    async def ensure_schema(self, *, auto_upgrade: bool) -> None:
        """SQLite (embedded) migrates itself; a shared server refuses an old schema, and a
        schema or connection that would lose characters."""
        if not await self.pending_migrations():
            await self.check_charset()
            return
        if auto_upgrade:
            await self.upgrade()
            return
        raise SchemaOutdated("the database schema is outdated: run `ansflow db upgrade`")


_SESSION_CHARSET = text(
    "SELECT @@character_set_client, @@character_set_connection, @@character_set_results")
_NARROW_COLUMNS = text(
    "SELECT TABLE_NAME, COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN :tables "
    "AND CHARACTER_SET_NAME IS NOT NULL AND CHARACTER_SET_NAME <> 'utf8mb4' "
    "ORDER BY TABLE_NAME, ORDINAL_POSITION"
).bindparams(bindparam("tables", expanding=True))


def charset_problem(session: tuple[Any, ...], columns: list[tuple[Any, ...]]) -> str | None:
    """What would lose characters: the connection's character sets (client, connection,
    results) and table columns (table, column, character set) that are not utf8mb4."""
    if any(charset != "utf8mb4" for charset in session):
        return (f"the database connection uses character set {session[1]} (client "
                f"{session[0]}, results {session[2]}), which cannot hold every character: "
                "use charset=utf8mb4 in ANSFLOW_DATABASE_URL (the default without it)")
    if columns:
        named = ", ".join(f"{table}.{column} ({charset})" for table, column, charset
                          in columns[:5])
        more = f" and {len(columns) - 5} more" if len(columns) > 5 else ""
        return (f"database columns are not utf8mb4 and would lose characters: {named}{more}; "
                "convert them with ALTER TABLE ... MODIFY <column> <type> CHARACTER SET "
                "utf8mb4 COLLATE utf8mb4_bin (`ansflow db upgrade` converts the tables of "
                "a database created before AnsFlow checked this)")
    return None


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    config = alembic_config()
    config.attributes["connection"] = connection
    try:
        command.upgrade(config, "head")
    except CommandError as error:
        current = ", ".join(MigrationContext.configure(connection).get_current_heads())
        raise ConfigurationError(
            f"the database is at schema revision {current or '(none)'}, which this version "
            f"of AnsFlow does not know (was it migrated by a newer one?): {error}") from error


def _is_outdated(connection: Connection) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    current = set(MigrationContext.configure(connection).get_current_heads())
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    return current != heads


def _ensure_sqlite_file(url: str) -> None:
    """Create the database file 0600 in a 0700 directory before SQLite does (SQLite
    creates its -wal and -shm files with the database file's mode)."""
    path = url.split(":///", 1)[-1].split("?", 1)[0]
    if path and path != ":memory:":
        database = private_file(Path(path))
        for companion in ("-wal", "-shm", "-journal"):
            private_file(database.with_name(database.name + companion), create=False)
