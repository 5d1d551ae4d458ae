from __future__ import annotations

from pathlib import Path

from ansflow.config import Settings
from tests.api.conftest import create, serve_app, start, wait_for
from tests.builders import pipeline_doc, step


async def test_deployments_are_listed_per_environment(settings: Settings, tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    doc = pipeline_doc(
        step("build", "mkdir -p dist && echo v1 > dist/app.txt"),
        {"name": "staging", "type": "deploy", "depends_on": ["build"],
         "config": {"target": "local", "environment": "staging", "source": "dist",
                    "path": str(root / "staging"), "version": "1.0.${{ trigger.commit }}"}},
        {"name": "production", "type": "deploy", "depends_on": ["staging"],
         "config": {"target": "local", "environment": "production", "source": "dist",
                    "path": str(root / "production")}},
    )
    async with serve_app(settings) as client:
        pipeline = await create(client, doc)
        for commit in ("a1a1", "b2b2"):  # commit ids have at least 4 hex digits
            execution = await start(client, pipeline["id"], commit=commit)
            assert (await wait_for(client, execution["id"]))["status"] == "success"
        staging = (await client.get("/api/v1/deployments", params={
            "environment": "staging", "pipeline_id": pipeline["id"]})).json()
        everything = (await client.get("/api/v1/deployments", params={
            "pipeline_id": pipeline["id"], "limit": 3})).json()
    assert staging["total"] == 2
    assert [d["version"] for d in staging["items"]] == ["1.0.b2b2", "1.0.a1a1"]
    assert {d["environment"] for d in staging["items"]} == {"staging"}
    assert staging["items"][0]["target"] == "local"
    assert everything["total"] == 4 and len(everything["items"]) == 3
    assert (root / "staging" / "current" / "app.txt").read_text() == "v1\n"
