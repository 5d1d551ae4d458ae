"""What a start may bring (PRODUCT.md section 8): the API answers 422 naming the field,
``ansflow run`` exits 2, a generic webhook answers 400; nothing starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansflow.config import Settings
from ansflow.errors import RequestError
from ansflow.triggers.webhooks.providers import generic
from tests.api.conftest import assert_envelope, create, serve_app, start
from tests.builders import pipeline_doc, step
from tests.e2e.test_cli import ansflow

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"ref": "-x"}, "body.ref"),
    ({"ref": "--upload-pack=touch /tmp/x"}, "body.ref"),
    ({"ref": "main branch"}, "body.ref"),
    ({"ref": "a..b"}, "body.ref"),
    ({"ref": "refs/heads/x.lock"}, "body.ref"),
    ({"ref": "refs/heads/.hidden"}, "body.ref"),
    ({"ref": "feat@{1}"}, "body.ref"),
    ({"ref": "a\nb"}, "body.ref"),
    ({"ref": "x~1"}, "body.ref"),
    ({"ref": "refs/heads/"}, "body.ref"),
    ({"ref": "@"}, "body.ref"),
    ({"ref": "r" * 256}, "body.ref"),
    ({"commit": "not-a-sha; rm -rf /"}, "body.commit"),
    ({"commit": "abc"}, "body.commit"),
    ({"commit": "g" * 40}, "body.commit"),
    ({"commit": "a" * 65}, "body.commit"),
    ({"variables": {"1st": "x"}}, "body.variables.1st.[key]"),
    ({"variables": {"a-b": "x"}}, "body.variables.a-b.[key]"),
    ({"variables": {"a" * 65: "x"}}, f"body.variables.{'a' * 65}.[key]"),
    ({"variables": {"big": "x" * 4097}}, "body.variables.big"),
    ({"variables": {"wide": "\u00e9" * 2049}}, "body.variables.wide"),
    ({"variables": {"nul": "a\u0000b"}}, "body.variables.nul"),
    ({"variables": {"list": [1, 2]}}, "body.variables.list"),
    ({"variables": {"object": {"a": 1}}}, "body.variables.object"),
    ({"variables": {"huge": 2**64}}, "body.variables.huge"),
    ({"variables": {f"v{i}": "x" for i in range(101)}}, "body.variables"),
]

ACCEPTED: list[dict[str, Any]] = [
    {"ref": "main", "commit": "abcd"},
    {"ref": "refs/heads/feat$(touch${IFS}pwned)", "commit": "A" * 64},
    {"ref": "release/1.2", "variables": {"_x9": "\u00e9" * 2048, "n": 3, "f": 1.5,
                                          "b": True, "none": None}},
    {"variables": {f"v{i}": "x" for i in range(100)}},
]


async def test_start_bodies_are_checked_like_webhooks(settings: Settings) -> None:
    async with serve_app(settings, scope="trigger") as trigger, \
            serve_app(settings) as admin:
        pipeline = await create(admin, pipeline_doc(step("noop")))
        url = f"/api/v1/pipelines/{pipeline['id']}/executions"
        for body, field in REFUSED:
            error = assert_envelope(await trigger.post(url, json=body), 422, "invalid_request")
            assert field in [d["field"] for d in error["details"]], (body, error)
            assert error["message"].startswith(field), error
            assert "Value error" not in error["message"]
        listed = (await admin.get("/api/v1/executions",
                                  params={"pipeline_id": pipeline["id"]})).json()
        assert listed["total"] == 0
        for body in ACCEPTED:
            started = await start(trigger, pipeline["id"], **body)
            assert started["trigger"]["ref"] == body.get("ref")


def test_ansflow_run_refuses_bad_trigger_values(tmp_path: Path) -> None:
    pipeline = tmp_path / "p.yml"
    pipeline.write_text("name: p\nsteps:\n  - {name: a, type: custom, config: "
                        "{script: 'touch ran'}}\n")
    for args, message in [
        (["--ref", "-x"], "ref is not a valid git ref name: '-x'"),
        (["--commit", "zz; rm -rf /"], "commit is not a commit id"),
        (["--var", "1x=y"], "variables.1x is not a variable name"),
        (["--var", f"big={'x' * 4097}"], "variables.big is longer than 4096 bytes"),
    ]:
        done = ansflow(tmp_path, "run", str(pipeline), *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not list(tmp_path.rglob("ran"))
    assert not (tmp_path / "a.db").exists()


@pytest.mark.parametrize(("variables", "problem"), [
    ({"1x": "y"}, "'variables.1x' is not a variable name"),
    ({"x": "y" * 4097}, "'variables.x' is longer than 4096 bytes"),
    ({"x": [1]}, "'variables.x' must be a string, number, boolean or null"),
])
def test_generic_webhook_variables_follow_the_same_rules(variables: dict[str, Any],
                                                         problem: str) -> None:
    with pytest.raises(RequestError) as caught:
        generic("push", "d1", {"ref": "refs/heads/main", "variables": variables})
    assert caught.value.message.startswith(f"malformed payload: {problem}")
