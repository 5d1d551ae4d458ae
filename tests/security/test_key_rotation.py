"""``ansflow secrets rotate-key`` with real API processes running through it: they keep
reading and writing secrets, without a restart, while every stored secret moves to the
new key."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from ansflow.config import Settings
from ansflow.db.models import AuditEvent, Secret
from ansflow.db.trust import TrustStore
from ansflow.resources import Resources
from ansflow.trust.keyring import generate_key, read_key_file, write_key_file
from tests.api.conftest import mint_token
from tests.builders import pipeline_doc, step
from tests.security.processes import ansflow, ansflow_env, api_server
from tests.security.test_secret_keys import box, legacy_ciphertext

OLD = "the old passphrase"


def key_file(path: Path, *keys: str) -> Path:
    write_key_file(path, list(keys))
    return path


def uses_secrets(*names: str) -> dict[str, Any]:
    """A pipeline whose step succeeds only when it got each secret's real value."""
    checks = " && ".join(f'test "${name}" = "value-of-{name}"' for name in names)
    env = {name: f"${{{{ secrets.{name} }}}}" for name in names}
    return pipeline_doc(step("check", f"{checks} || exit 7", env=env))


class Api:
    def __init__(self, http: httpx.AsyncClient, base: str, token: str) -> None:
        self.http, self.base = http, base
        self.headers = {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, f"{self.base}/api/v1{path}",
                                           headers=self.headers, **kwargs)
        assert response.status_code < 300, response.text
        return response.json()

    async def put_secret(self, name: str) -> None:
        await self.call("POST", "/secrets", json={"name": name, "value": f"value-of-{name}"})

    async def run(self, pipeline_id: int) -> str:
        """Start an execution and wait for its end; its status."""
        execution = await self.call("POST", f"/pipelines/{pipeline_id}/executions", json={})
        deadline = time.monotonic() + 60  # generous: a loaded 2-core box
        while True:
            record = await self.call("GET", f"/executions/{execution['id']}")
            if record["status"] not in {"queued", "running"}:
                return str(record["status"])
            assert time.monotonic() < deadline, record
            await asyncio.sleep(0.1)


async def ciphertexts(settings: Settings) -> dict[str, str]:
    async with Resources.open(settings) as resources, resources.db.session() as session:
        return {s.name: s.ciphertext for s in await TrustStore(session).list_secrets()}


def rotate(settings: Settings, keys: Path, *options: str) -> str:
    done = ansflow(ansflow_env(settings, secret_key_file=str(keys)), "secrets", "rotate-key",
                   *options)
    assert done.returncode == 0, done.stderr
    return done.stderr


async def test_processes_on_the_old_key_keep_working_through_a_rotation(
        own_database: Settings, tmp_path: Path) -> None:
    """The procedure for many hosts: every process first learns the new key as a second
    line; then the key is rotated; processes still encrypting with the old key read and
    write all along."""
    settings, new = own_database, generate_key()
    async with Resources.open(settings) as resources:
        admin = await mint_token(resources, "admin")
        async with resources.db.session() as session:
            await TrustStore(session).put_secret("LEGACY", None, legacy_ciphertext(
                OLD, "value-of-LEGACY"))
            await session.commit()
    still_old = key_file(tmp_path / "host-b.key", OLD, new)
    env = ansflow_env(settings, secret_key_file=str(still_old))
    async with (api_server(env, tmp_path / "b.log") as base,
                httpx.AsyncClient(timeout=30) as http):
        api = Api(http, base, admin)
        await api.put_secret("FIRST")
        pipeline = await api.call("POST", "/pipelines", json=uses_secrets("FIRST", "LEGACY"))
        assert await api.run(pipeline["id"]) == "success"
        assert "re-encrypted 2 of 2" in rotate(settings, key_file(tmp_path / "c.key", new, OLD))
        assert await api.run(pipeline["id"]) == "success"
        await api.put_secret("LATER")  # this process still encrypts with the old key
        later = await api.call("POST", "/pipelines", json=uses_secrets("FIRST", "LATER"))
        assert await api.run(later["id"]) == "success"
    assert "re-encrypted 1 of 3" in rotate(settings, key_file(tmp_path / "c.key", new, OLD))
    assert "re-encrypted 0 of 3" in rotate(settings, key_file(tmp_path / "c.key", new, OLD))
    only_new = box(new)
    stored = await ciphertexts(settings)
    assert {n: await only_new.decrypt(c) for n, c in stored.items()} == {
        n: f"value-of-{n}" for n in ("FIRST", "LEGACY", "LATER")}
    assert all(c.startswith("v2:hkdf:") for c in stored.values())
    async with Resources.open(settings) as resources, resources.db.session() as session:
        audited = (await session.scalars(select(AuditEvent).where(
            AuditEvent.action == "secret.rotate_key").order_by(AuditEvent.id))).all()
    assert [(a.actor_type, a.details["re_encrypted"]) for a in audited] == [
        ("cli", 2), ("cli", 1), ("cli", 0)]


async def test_generate_on_one_host_needs_no_restart(own_database: Settings,
                                                     tmp_path: Path) -> None:
    """One host, one key file: ``rotate-key --generate`` puts a new key first; the running
    API reads the file again and goes on; then the old key is removed."""
    settings = own_database
    keys = key_file(tmp_path / "ansflow.key", OLD)
    async with Resources.open(settings) as resources:
        admin = await mint_token(resources, "admin")
    env = ansflow_env(settings, secret_key_file=str(keys))
    async with (api_server(env, tmp_path / "a.log") as base,
                httpx.AsyncClient(timeout=30) as http):
        api = Api(http, base, admin)
        await api.put_secret("DEPLOY_KEY")
        pipeline = await api.call("POST", "/pipelines", json=uses_secrets("DEPLOY_KEY"))
        assert (await ciphertexts(settings))["DEPLOY_KEY"].startswith("v2:scrypt:")
        assert "re-encrypted 1 of 1" in rotate(settings, keys, "--generate")
        current = read_key_file(keys)
        assert len(current) == 2 and current[1] == OLD and current[0].startswith("base64:")
        assert stat.S_IMODE(os.stat(keys).st_mode) == 0o600
        assert await api.run(pipeline["id"]) == "success"
        await api.put_secret("SECOND")
        assert (await ciphertexts(settings))["SECOND"].startswith("v2:hkdf:")
        write_key_file(keys, current[:1])  # the old key is gone
        both = await api.call("POST", "/pipelines", json=uses_secrets("DEPLOY_KEY", "SECOND"))
        assert await api.run(both["id"]) == "success"
    stored = await ciphertexts(settings)
    assert {await box(current[0]).decrypt(c) for c in stored.values()} == {
        "value-of-DEPLOY_KEY", "value-of-SECOND"}


async def test_rotation_refuses_a_secret_no_key_opens_and_changes_nothing(
        own_database: Settings, tmp_path: Path) -> None:
    settings = own_database
    async with Resources.open(settings) as resources, resources.db.session() as session:
        await TrustStore(session).put_secret("MINE", None, await box(OLD).encrypt("x"))
        await TrustStore(session).put_secret("FOREIGN", None,
                                             await box("someone else's key").encrypt("y"))
        await session.commit()
    before = await ciphertexts(settings)
    done = ansflow(ansflow_env(settings, secret_key_file=str(
        key_file(tmp_path / "k", generate_key(), OLD))), "secrets", "rotate-key")
    assert done.returncode == 1
    assert "'FOREIGN' (global) cannot be decrypted" in done.stderr
    assert "nothing was re-encrypted" in done.stderr and "Traceback" not in done.stderr
    assert await ciphertexts(settings) == before
    async with Resources.open(settings) as resources, resources.db.session() as session:
        rows = (await session.scalars(select(Secret.name))).all()
    assert sorted(rows) == ["FOREIGN", "MINE"]
