"""Test services: a MariaDB database of this run's own and a Redis key prefix of its own.

A service that is not reachable fails the run at once with a message saying how to start
it; nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from ansflow.config import Settings
from ansflow.db.database import Database
from ansflow.resources import Resources
from tests.receiver import Receiver

RUN = uuid.uuid4().hex[:8]
MYSQL_HOST = os.environ.get("ANSFLOW_TEST_MYSQL", "root@127.0.0.1:3306")
MYSQL_SERVER = f"mysql+asyncmy://{MYSQL_HOST}"
MYSQL_DB = f"ansflow_test_{RUN}"
MYSQL_URL = f"{MYSQL_SERVER}/{MYSQL_DB}?charset=utf8mb4"
REDIS_URL = os.environ.get("ANSFLOW_TEST_REDIS", "redis://127.0.0.1:6379/0")
WATCHDOG_SECONDS = 300
"""A test still running after this long is stuck: the slowest take about 100 s on a
loaded two-core machine. The watchdog prints every task's stack and cancels them, so a
hang is one failed test that shows where it waited, not a suite that never ends
(``faulthandler_timeout`` in pyproject.toml dumps the threads for a blocked loop)."""
START_HINT = {
    "MariaDB": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd "
               "-- --user=mysql",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
             "--appendonly no",
}


async def _server(statement: str) -> None:
    engine = create_async_engine(f"{MYSQL_SERVER}/?charset=utf8mb4")
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _prepare() -> None:
    await _server(f"CREATE DATABASE `{MYSQL_DB}` CHARACTER SET utf8mb4")
    db = Database(Settings(database_url=MYSQL_URL))
    try:
        await db.upgrade()
    finally:
        await db.dispose()


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        asyncio.run(_prepare())
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        pytest.exit(f"MariaDB is not reachable at {MYSQL_HOST} ({exc}); start it with: "
                    f"{START_HINT['MariaDB']}", returncode=1)
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.exceptions.RedisError as exc:
        pytest.exit(f"Redis is not reachable at {REDIS_URL} ({exc}); start it with: "
                    f"{START_HINT['Redis']}", returncode=1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.append("_watchdog")


@pytest.fixture
async def _watchdog() -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    handle = loop.call_later(WATCHDOG_SECONDS, _stuck, loop)
    yield
    handle.cancel()


def _stuck(loop: asyncio.AbstractEventLoop) -> None:
    stacks = io.StringIO()
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.print_stack(file=stacks)
    sys.stderr.write(f"the test ran {WATCHDOG_SECONDS}s; its tasks wait here:\n"
                     f"{stacks.getvalue()}")
    for task in tasks:
        task.cancel()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    with contextlib.suppress(OSError, sqlalchemy.exc.SQLAlchemyError):
        asyncio.run(_server(f"DROP DATABASE IF EXISTS `{MYSQL_DB}`"))


@pytest.fixture
def queue_name() -> str:
    return f"ansflow:test:{RUN}:{uuid.uuid4().hex[:6]}"


@pytest.fixture
def settings(tmp_path: Path, queue_name: str) -> Settings:
    """MariaDB + this run's database; workspaces in the test's temp dir. Steps run in the
    sandbox (the default where bwrap works) and may use the test's temp dir, where tests
    keep markers, repositories and deploy targets; the workspace root, the artifacts and
    the database stay hidden from them."""
    return Settings(database_url=MYSQL_URL, queue_name=queue_name,
                    workspace_root=tmp_path / "ws", artifact_root=tmp_path / "artifacts",
                    lease_seconds=5, kill_grace_seconds=1, secret_key="test-secret-key",
                    sandbox_writable=[tmp_path])


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'ansflow.db'}",
                    workspace_root=tmp_path / "ws", artifact_root=tmp_path / "artifacts",
                    lease_seconds=5, kill_grace_seconds=1, sandbox_writable=[tmp_path])


@pytest.fixture(params=["mysql", "sqlite"])
def any_settings(request: pytest.FixtureRequest, settings: Settings,
                 sqlite_settings: Settings) -> Settings:
    return settings if request.param == "mysql" else sqlite_settings


@pytest.fixture
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    async with Resources.open(settings) as opened:
        yield opened


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    async with server:
        yield receiver
