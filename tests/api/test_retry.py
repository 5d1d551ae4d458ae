"""POST /executions/{id}/retry: succeeded steps are reused, the rest run again."""

from __future__ import annotations

from pathlib import Path

from ansflow.config import Settings
from tests.api.conftest import assert_envelope, create, serve_app, start, step_of, wait_for
from tests.builders import pipeline_doc, step


async def test_retry_reuses_successes_and_their_workspace(settings: Settings,
                                                          tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    flag = tmp_path / "fixed"
    doc = pipeline_doc(
        step("build", f'echo built >> {runs}; echo artifact > app.bin\n'
                      'echo "version=7" >> "$ANSFLOW_OUTPUT"'),
        step("test", f"test -f {flag} && test -f app.bin && "
                     'test "${{ steps.build.outputs.version }}" = 7', depends_on=["build"]),
        step("ship", "true", depends_on=["test"]),
    )
    async with serve_app(settings) as client:
        pipeline = await create(client, doc)
        first = await wait_for(client, (await start(client, pipeline["id"]))["id"])
        assert first["status"] == "failed"
        assert_envelope(await client.post(f"/api/v1/executions/{first['id'] + 10**6}/retry"),
                        404)
        flag.write_text("the flaky thing was fixed")
        response = await client.post(f"/api/v1/executions/{first['id']}/retry")
        assert response.status_code == 202, response.text
        retried = await wait_for(client, response.json()["id"])
        again = await client.post(f"/api/v1/executions/{retried['id']}/retry")
    assert retried["status"] == "success", retried
    assert retried["trigger"]["type"] == "retry"
    assert runs.read_text() == "built\n"  # not run a second time
    build = step_of(retried, "build")
    assert build["outputs"] == {"version": "7"}
    assert build["result"]["reused_from_execution"] == first["id"]
    assert [a["status"] for a in step_of(retried, "test")["attempts"]] == ["success"]
    assert_envelope(again, 409, "conflict")
