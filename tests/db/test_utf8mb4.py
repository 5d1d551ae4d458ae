"""MySQL text is utf8mb4 everywhere (PRODUCT.md section 8; PITFALLS 15): on a server or
database whose default is latin1, migrations convert the tables; a connection or column
that would lose characters is refused at start-up; a log chunk the database refuses
fails the step and the execution, loudly."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from ansflow.config import Settings
from ansflow.db.database import Database
from ansflow.db.models import UTF8MB4, Base
from ansflow.errors import ConfigurationError
from ansflow.resources import Resources
from tests.api.conftest import create, serve_app, start, wait_for
from tests.builders import pipeline_doc, step
from tests.conftest import MYSQL_SERVER
from tests.db.test_migrations import _admin, downgrade, drift
from tests.engine.harness import run_doc
from tests.engine.test_secrets import all_log_text

HELLO = "こんにちは"
ROCKET = "🚀"


@pytest.fixture(params=["utf8mb4", "latin1"])
async def database(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """An empty MariaDB database created with the given default character set."""
    name = f"ansflow_cs_{uuid.uuid4().hex[:12]}"
    await _admin(f"CREATE DATABASE `{name}` CHARACTER SET {request.param}")
    try:
        yield f"{MYSQL_SERVER}/{name}?charset=utf8mb4"
    finally:
        await _admin(f"DROP DATABASE IF EXISTS `{name}`")


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=url, workspace_root=tmp_path / "ws",
                    artifact_root=tmp_path / "artifacts", lease_seconds=5,
                    kill_grace_seconds=1)


async def columns(db: Database) -> set[tuple[str, str]]:
    async with db.engine.connect() as connection:
        rows = await connection.execute(text(
            "SELECT TABLE_NAME, COLLATION_NAME FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND COLLATION_NAME IS NOT NULL "
            "AND TABLE_NAME <> 'alembic_version'"))
        return {(table, collation) for table, collation in rows}


def test_every_table_is_declared_utf8mb4() -> None:
    for table in Base.metadata.tables.values():
        options = table.dialect_options["mysql"]
        assert (options["charset"], options["collate"]) == (
            UTF8MB4["mysql_charset"], UTF8MB4["mysql_collate"]), table.name


async def test_upgrade_converts_existing_tables_and_keeps_their_data(database: str) -> None:
    db = Database(Settings(database_url=database))
    try:
        await db.upgrade()
        await downgrade(database, "31fb20265f7c")  # the schema before this conversion
        async with db.engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO pipeline (name, description, definition, definition_format, "
                "version, created_at, updated_at) VALUES ('old', 'café crème', '{}', 'json', "
                "1, NOW(6), NOW(6))"))
        await db.upgrade()
        assert {collation for _, collation in await columns(db)} == {"utf8mb4_bin"}
        assert await drift(database) == [], "the conversion must keep every column's type"
        async with db.engine.begin() as connection:
            old = await connection.scalar(text(
                "SELECT description FROM pipeline WHERE name = 'old'"))
            assert old == "café crème"
            await connection.execute(text(
                "UPDATE pipeline SET description = :d WHERE name = 'old'"), {"d": HELLO})
            assert await connection.scalar(text(
                "SELECT description FROM pipeline WHERE name = 'old'")) == HELLO
    finally:
        await db.dispose()


async def test_text_and_logs_round_trip_on_any_default_charset(database: str,
                                                                tmp_path: Path) -> None:
    db = Database(Settings(database_url=database))
    try:
        await db.upgrade()
    finally:
        await db.dispose()
    doc = pipeline_doc(step("launch", f"echo 'lift-off {ROCKET} {HELLO}'"),
                       description=f"{HELLO} {ROCKET}")
    async with serve_app(settings_for(database, tmp_path)) as client:
        pipeline = await create(client, doc)
        read = (await client.get(f"/api/v1/pipelines/{pipeline['id']}")).json()
        assert read["description"] == f"{HELLO} {ROCKET}"
        assert HELLO in read["definition"]
        execution = await wait_for(client, (await start(client, pipeline["id"]))["id"])
        assert execution["status"] == "success", execution
        log = (await client.get(f"/api/v1/executions/{execution['id']}/steps/launch/logs"
                                )).json()
    assert f"lift-off {ROCKET} {HELLO}\n" in log["content"]
    assert log["truncated_bytes"] == 0


async def test_a_connection_that_is_not_utf8mb4_is_refused(database: str,
                                                            tmp_path: Path) -> None:
    db = Database(Settings(database_url=database))
    try:
        await db.upgrade()
    finally:
        await db.dispose()
    latin1 = database.replace("charset=utf8mb4", "charset=latin1")
    with pytest.raises(ConfigurationError) as caught:
        async with Resources.open(settings_for(latin1, tmp_path)):
            pass
    assert "character set latin1" in caught.value.message
    assert "charset=utf8mb4" in caught.value.message
    # the same one line from the commands that open the database
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}
    done = await asyncio.to_thread(
        subprocess.run, [str(Path(sys.executable).parent / "ansflow"), "serve"],
        env={**env, "ANSFLOW_DATABASE_URL": latin1}, capture_output=True, text=True,
        timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("error: the database connection uses character set latin1")
    assert "Traceback" not in done.stderr


async def test_a_column_that_would_lose_characters_is_refused(database: str,
                                                               tmp_path: Path) -> None:
    db = Database(Settings(database_url=database))
    try:
        await db.upgrade()
        async with db.engine.begin() as connection:
            await connection.execute(text(
                "ALTER TABLE step_log MODIFY content LONGTEXT CHARACTER SET latin1 NOT NULL"))
    finally:
        await db.dispose()
    with pytest.raises(ConfigurationError) as caught:
        async with Resources.open(settings_for(database, tmp_path)):
            pass
    assert "step_log.content (latin1)" in caught.value.message


@pytest.mark.parametrize("database", ["utf8mb4"], indirect=True)
async def test_a_refused_log_write_fails_the_step_and_the_execution(database: str,
                                                                     tmp_path: Path) -> None:
    db = Database(Settings(database_url=database))
    try:
        await db.upgrade()
    finally:
        await db.dispose()
    async with Resources.open(settings_for(database, tmp_path)) as resources:
        # a column changed behind the running service's back (the start-up check passed)
        async with resources.db.engine.begin() as connection:
            await connection.execute(text(
                "ALTER TABLE step_log MODIFY content LONGTEXT CHARACTER SET latin1 NOT NULL"))
        ran = await run_doc(resources, pipeline_doc(
            # its first chunk is refused while it still runs: the step fails on it
            step("early", f"echo 'early {ROCKET}'; sleep 1; echo done"),
            step("ascii", "echo plain"),
        ))
        logs = await all_log_text(resources, ran.result.execution_id)
        # its only chunk is refused after the step's verdict: the execution errors anyway
        late = await run_doc(resources, pipeline_doc(step("late", f"echo 'late {ROCKET}'")))
    early = ran.step("early")
    assert early.status == "failed" and early.error_code == "log_write_refused"
    assert early.error is not None
    assert early.error.startswith("the step's log could not be stored: storing ")
    assert "Incorrect string value" in early.error
    assert ran.statuses()["ascii"] == "success"
    assert ran.status == "error", ran.record
    assert ran.record.error is not None
    assert "the log of step 'early' could not be stored" in ran.record.error
    # the log says so too, where the refused bytes are missing
    assert "[ansflow] storing " in logs and "plain\n" in logs and "done\n" in logs
    assert late.status == "error", late.record
    assert late.record.error is not None
    assert late.record.error.startswith("the log of step 'late' could not be stored: ")
