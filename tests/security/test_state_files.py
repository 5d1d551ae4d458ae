"""State files the service creates are its user's alone: directories 0700, the SQLite
database (with its -wal/-shm files) and a generated key file 0600. What steps create
keeps the ordinary umask."""

from __future__ import annotations

import asyncio
import getpass
import os
import stat
import subprocess
from pathlib import Path

import yaml
from sqlalchemy import select, text

from ansflow.config import Settings
from ansflow.db.models import AuditEvent
from ansflow.resources import Resources
from ansflow.trust.keyring import read_key_file
from tests.builders import pipeline_doc, step
from tests.security.processes import ANSFLOW, ansflow


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSFLOW_")}


async def test_ansflow_run_on_the_embedded_default_creates_private_state(
        tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yml"
    pipeline.write_text(yaml.safe_dump(pipeline_doc(step(
        "write", "echo hi > made-by-step.txt"))))
    done = await asyncio.to_thread(
        subprocess.run, [ANSFLOW, "run", str(pipeline)], cwd=tmp_path, env=clean_env(),
        capture_output=True, text=True, timeout=300, umask=0o022)
    assert done.returncode == 0, done.stdout + done.stderr
    database = tmp_path / "ansflow.db"
    assert mode(database) == 0o600
    for companion in (tmp_path / "ansflow.db-wal", tmp_path / "ansflow.db-shm"):
        assert not companion.exists() or mode(companion) == 0o600
    for directory in (".ansflow", ".ansflow/workspaces", ".ansflow/artifacts"):
        assert mode(tmp_path / directory) == 0o700, directory
    workspace = tmp_path / ".ansflow" / "workspaces" / "1"
    assert mode(workspace / "made-by-step.txt") == 0o644  # steps keep the umask
    url = f"sqlite+aiosqlite:///{database}"
    settings = Settings(database_url=url, workspace_root=tmp_path / "w",
                        artifact_root=tmp_path / "a")
    async with Resources.open(settings) as resources, resources.db.session() as session:
        rows = (await session.scalars(select(AuditEvent).order_by(AuditEvent.id))).all()
    assert [(r.action, r.actor_type) for r in rows] == [("pipeline.create", "cli"),
                                                        ("execution.start", "cli")]
    assert {r.actor for r in rows} == {getpass.getuser()}


async def test_wal_files_and_nested_directories_are_private(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'state' / 'nested' / 'db.sqlite'}"
    settings = Settings(database_url=url, workspace_root=tmp_path / "data" / "ws",
                        artifact_root=tmp_path / "data" / "artifacts")
    async with Resources.open(settings) as resources:
        async with resources.db.session() as session:
            await session.execute(text("SELECT 1"))
        wal = tmp_path / "state" / "nested" / "db.sqlite-wal"
        shm = tmp_path / "state" / "nested" / "db.sqlite-shm"
        assert wal.exists() and shm.exists()
        assert (mode(wal), mode(shm)) == (0o600, 0o600)
    for directory in ("state", "state/nested", "data", "data/ws", "data/artifacts"):
        assert mode(tmp_path / directory) == 0o700, directory
    assert mode(tmp_path / "state" / "nested" / "db.sqlite") == 0o600


async def test_a_database_file_others_could_read_is_tightened(tmp_path: Path) -> None:
    database = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{database}"
    settings = Settings(database_url=url, workspace_root=tmp_path / "ws",
                        artifact_root=tmp_path / "artifacts")
    async with Resources.open(settings):
        pass
    os.chmod(database, 0o644)  # as versions before this one left it
    async with Resources.open(settings):
        assert mode(database) == 0o600


def test_generate_key_writes_a_private_key_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "ansflow" / "secret.key"
    done = ansflow(clean_env(), "secrets", "generate-key", "--file", str(path))
    assert done.returncode == 0, done.stderr
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert read_key_file(path)[0].startswith("base64:") and done.stdout == ""
    again = ansflow(clean_env(), "secrets", "generate-key", "--file", str(path))
    assert again.returncode == 1 and "exists" in again.stderr
    printed = ansflow(clean_env(), "secrets", "generate-key")
    assert printed.stdout.startswith("base64:") and printed.stdout.strip() != read_key_file(
        path)[0]
