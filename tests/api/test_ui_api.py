"""What the web UI and generated clients rely on: the UI at /, whoami, a pipeline's DAG
with estimates, repeated filters, log offsets past the end, plain operation ids."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import httpx

from ansflow.api.app import create_app
from ansflow.config import Settings
from tests.api.conftest import assert_envelope, create, serve_app, start, wait_for
from tests.builders import pipeline_doc, step

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "ansflow" / "ui" / "static"


async def test_the_ui_is_served_at_the_root(client: httpx.AsyncClient) -> None:
    page = await client.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script type="module" src="/ui/app.js">' in page.text
    script = await client.get("/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert_envelope(await client.get("/ui/missing.js"), 404)
    # nothing from elsewhere: every import and link stays on this server
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in text, path


def test_every_ui_file_ships_in_the_wheel() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "ansflow.ui.static" in data["tool"]["setuptools"]["packages"]
    patterns = data["tool"]["setuptools"]["package-data"]["ansflow.ui.static"]
    for path in STATIC.iterdir():
        assert any(fnmatch.fnmatch(path.name, p) for p in patterns), f"{path} is not packaged"


async def test_whoami_answers_the_tokens_scope(settings: Settings) -> None:
    for scope in ("read", "trigger", "admin"):
        async with serve_app(settings, scope=scope) as client:
            me = await client.get("/api/v1/whoami")
            assert me.status_code == 200 and me.json()["scope"] == scope
    async with serve_app(settings, scope=None) as client:
        assert_envelope(await client.get("/api/v1/whoami"), 401)


async def test_dag_is_estimated_from_past_durations(client: httpx.AsyncClient) -> None:
    doc = pipeline_doc(step("a", "true"), step("slow", "sleep 0.6", depends_on=["a"]),
                       step("fast", "true", depends_on=["a"]),
                       step("z", "true", depends_on=["slow", "fast"]))
    pipeline = await create(client, doc)
    before = (await client.get(f"/api/v1/pipelines/{pipeline['id']}/dag")).json()
    assert before["estimate_basis"] == "step_count"
    assert [s["depends_on"] for s in before["steps"]] == [[], ["a"], ["a"], ["slow", "fast"]]
    await wait_for(client, (await start(client, pipeline["id"]))["id"])
    after = (await client.get(f"/api/v1/pipelines/{pipeline['id']}/dag")).json()
    assert after["estimate_basis"] == "past_durations"
    assert after["critical_path"] == ["a", "slow", "z"]
    assert after["estimated_duration_seconds"] >= 0.6
    assert_envelope(await client.get("/api/v1/pipelines/999999/dag"), 404)


async def test_list_filters_take_repeated_values(client: httpx.AsyncClient) -> None:
    ok = await create(client, pipeline_doc(step("a", "true")))
    bad = await create(client, pipeline_doc(step("a", "exit 1")))
    runs = [await start(client, ok["id"]), await start(client, bad["id"])]
    for run in runs:
        await wait_for(client, run["id"])
    both = await client.get("/api/v1/executions", params=[
        ("status", "success"), ("status", "failed"), ("trigger", "api"), ("limit", "500")])
    ids = {e["id"] for e in both.json()["items"]}
    assert {r["id"] for r in runs} <= ids
    only = await client.get("/api/v1/executions", params=[
        ("pipeline_id", str(bad["id"])), ("status", "success"), ("status", "cancelled")])
    assert only.json()["total"] == 0
    wrong = await client.get("/api/v1/executions", params=[("status", "success"),
                                                           ("status", "done")])
    assert assert_envelope(wrong, 422)["details"][0]["field"] == "query.status.1"


async def test_a_log_offset_past_the_end_is_refused_alike(client: httpx.AsyncClient) -> None:
    pipeline = await create(client, pipeline_doc(step("talk", "echo hi; sleep 30")))
    execution = await start(client, pipeline["id"])
    url = f"/api/v1/executions/{execution['id']}/steps/talk/logs"
    running = await wait_for(client, execution["id"],
                             lambda e: e["steps"][0]["status"] == "running")
    assert running["status"] == "running"
    size = 0
    while size == 0:  # until the first line is stored
        size = (await client.get(url)).json()["next_offset"]
    at_end = await client.get(url, params={"offset": size})
    assert at_end.status_code == 200 and at_end.json()["content"] == ""
    error = assert_envelope(await client.get(url, params={"offset": size + 1}), 416,
                            "offset_out_of_range")
    assert "talk" in error["message"] and str(size) in error["message"]
    await client.post(f"/api/v1/executions/{execution['id']}/cancel")
    await wait_for(client, execution["id"])
    ended = (await client.get(url)).json()["next_offset"]
    assert_envelope(await client.get(url, params={"offset": ended + 1}), 416,
                    "offset_out_of_range")


def test_operation_ids_are_plain_and_unique(sqlite_settings: Settings) -> None:
    schema = create_app(sqlite_settings).openapi()
    ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert {"start_execution", "cancel_execution", "execution_events", "whoami"} <= set(ids)
    assert all("-" not in i and not i.startswith(("executions_", "pipelines_")) for i in ids)
    assert "ExecutionSummaryPage" in schema["components"]["schemas"]
