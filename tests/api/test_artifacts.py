"""Artifacts on any step type (listed, streamed with their sha256, expired) and caches
(exact, prefix, miss) through the API, with executions run in this process."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from ansflow.config import Settings
from ansflow.resources import Resources
from ansflow.status import utcnow
from ansflow.workspace.gc import collect_garbage
from tests.api.conftest import assert_envelope, create, start, step_of, wait_for
from tests.builders import pipeline_doc, step

MAKE = ("mkdir -p dist && head -c 300000 /dev/urandom > dist/app.bin && "
        "echo notes > dist/notes.txt && ln -s notes.txt dist/same.txt && "
        "ln -s /etc/passwd dist/evil")


async def run(client: httpx.AsyncClient, doc: dict[str, Any], **body: Any) -> dict[str, Any]:
    pipeline = await create(client, doc)
    return await run_again(client, pipeline["id"], **body)


async def run_again(client: httpx.AsyncClient, pipeline_id: int, **body: Any
                    ) -> dict[str, Any]:
    execution = await start(client, pipeline_id, **body)
    return await wait_for(client, execution["id"], within=60)


async def test_artifacts_of_any_step_type_are_listed_and_streamed_with_their_sha256(
        client: httpx.AsyncClient, settings: Settings) -> None:
    doc = pipeline_doc(
        step("make", MAKE, artifacts=["dist/*"]),
        step("package", type="build", depends_on=["make"],
             config={"tool": "shell", "command": "mkdir -p out && echo built > out/x.txt",
                     "artifacts": ["out/*.txt"]}),
        step("broken", "mkdir -p bad && echo no > bad/f; exit 3", artifacts=["bad/*"]),
    )
    record = await run(client, doc)
    assert step_of(record, "make")["status"] == "success", record
    listed = await client.get(f"/api/v1/executions/{record['id']}/artifacts")
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [(a["step"], a["path"]) for a in items] == [
        ("make", "dist/app.bin"), ("make", "dist/notes.txt"), ("make", "dist/same.txt"),
        ("package", "out/x.txt")]
    assert record["artifacts"] == items
    workspace = settings.workspace_root / str(record["id"])
    for item in items:
        content = (workspace / item["path"]).read_bytes()
        response = await client.get(f"/api/v1/executions/{record['id']}/artifacts/{item['id']}")
        assert response.status_code == 200, response.text
        digest = hashlib.sha256(response.content).hexdigest()
        assert response.content == content
        assert digest == item["sha256"] == response.headers["x-checksum-sha256"]
        assert int(response.headers["content-length"]) == item["size"] == len(content)
        assert response.headers["digest"] == "sha-256=" + base64.b64encode(
            hashlib.sha256(content).digest()).decode()
    log = await client.get(f"/api/v1/executions/{record['id']}/steps/make/logs")
    assert "artifact dist/evil: a symbolic link to outside the workspace; skipped" in (
        log.json()["content"])


async def test_an_unknown_or_foreign_artifact_is_a_404(client: httpx.AsyncClient) -> None:
    first = await run(client, pipeline_doc(step("make", MAKE, artifacts=["dist/notes.txt"])))
    other = await run(client, pipeline_doc(step("noop")))
    [artifact] = first["artifacts"]
    assert_envelope(await client.get(
        f"/api/v1/executions/{other['id']}/artifacts/{artifact['id']}"), 404, "not_found")
    assert_envelope(await client.get(
        f"/api/v1/executions/{first['id']}/artifacts/{artifact['id'] + 10_000}"), 404)
    response = await client.get(f"/api/v1/executions/{first['id']}/artifacts/{10**30}")
    assert response.status_code == 422, response.text


async def test_retention_forgets_old_artifacts_and_removes_unreferenced_blobs(
        client: httpx.AsyncClient, resources: Resources, settings: Settings,
        tmp_path: Path) -> None:
    record = await run(client, pipeline_doc(step("make", MAKE, artifacts=["dist/app.bin"])))
    blobs = tmp_path / "store" / "blobs"
    stored = {p.name for p in blobs.rglob("*") if p.is_file()}
    assert record["artifacts"][0]["sha256"] in stored

    soon = await collect_garbage(resources.db, resources.store, settings,
                                 now=utcnow() + timedelta(days=1))
    assert (soon.artifacts, soon.blobs) == (0, 0)
    assert {p.name for p in blobs.rglob("*") if p.is_file()} == stored

    later = await collect_garbage(resources.db, resources.store, settings,
                                  now=utcnow() + timedelta(days=settings.artifact_retention_days,
                                                           hours=1))
    assert later.artifacts >= 1  # the database is shared by the session's tests
    assert later.blobs == len(stored)
    assert [p for p in blobs.rglob("*") if p.is_file()] == []
    listed = await client.get(f"/api/v1/executions/{record['id']}/artifacts")
    assert listed.json()["items"] == []
    assert_envelope(await client.get(
        f"/api/v1/executions/{record['id']}/artifacts/{record['artifacts'][0]['id']}"), 404)


CACHED = ("if test -f vendor/lib.txt; then echo restored; "
          "else mkdir -p vendor && echo lib > vendor/lib.txt && echo fetched; fi")


async def test_a_cache_misses_then_hits_exactly_then_by_prefix(
        client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(
        step("lock", "echo ${{ vars.lock }} > lock.txt"),
        step("deps", CACHED, depends_on=["lock"],
             cache={"key": "deps-${{ hashFiles('lock.txt') }}", "paths": ["vendor"],
                    "restore_keys": ["deps-"]}),
    )
    pipeline = await create(client, doc)

    def key(lock: str) -> str:
        return "deps-" + hashlib.sha256(hashlib.sha256(f"{lock}\n".encode()).digest()).hexdigest()

    async def deps(lock: str) -> tuple[dict[str, Any], str]:
        record = await run_again(client, pipeline["id"], variables={"lock": lock})
        assert record["status"] == "success", record
        log = await client.get(f"/api/v1/executions/{record['id']}/steps/deps/logs")
        return step_of(record, "deps")["result"]["cache"], log.json()["content"]

    cache, log = await deps("v1")
    assert cache == {"key": key("v1"), "hit": None, "restored_key": None}
    assert "fetched" in log and f"cache saved as {key('v1')!r}" in log
    cache, log = await deps("v1")
    assert cache == {"key": key("v1"), "hit": "exact", "restored_key": key("v1")}
    assert "restored" in log and "cache saved" not in log
    cache, log = await deps("v2")
    assert cache == {"key": key("v2"), "hit": "prefix", "restored_key": key("v1")}
    assert "restored" in log and f"cache saved as {key('v2')!r}" in log


async def test_caches_are_not_shared_between_pipelines(client: httpx.AsyncClient) -> None:
    cache = {"key": "same-key", "paths": ["vendor"]}
    first = await run(client, pipeline_doc(step("deps", CACHED, cache=cache)))
    second = await run(client, pipeline_doc(step("deps", CACHED, cache=cache)))
    assert step_of(first, "deps")["result"]["cache"]["hit"] is None
    assert step_of(second, "deps")["result"]["cache"]["hit"] is None


async def test_a_cache_key_that_does_not_evaluate_fails_the_step_by_name(
        client: httpx.AsyncClient) -> None:
    record = await run(client, pipeline_doc(step("deps", "true", cache={
        "key": "k-${{ hashFiles(1) }}", "paths": ["vendor"]})))
    deps = step_of(record, "deps")
    assert deps["status"] == "failed"
    assert deps["error"] == ("preparing the workspace: cache.key: hashFiles() takes glob "
                             "patterns (strings)")
