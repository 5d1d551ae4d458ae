"""Definition rules of ``concurrency`` (pipeline and step) and ``report_status``."""

from __future__ import annotations

from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.spec import expr
from ansflow.spec.concurrency import execution_group, group_name
from tests.builders import parse


def doc(**fields: Any) -> dict[str, Any]:
    steps = fields.pop("steps", [{"name": "a", "type": "custom", "config": {"script": "true"}}])
    return {"name": "p", "steps": steps, **fields}


def test_a_group_may_be_a_plain_string() -> None:
    spec = parse(doc(concurrency="deploy"))
    assert spec.concurrency is not None
    assert spec.concurrency.group == "deploy" and not spec.concurrency.cancel_in_progress


@pytest.mark.parametrize(("fields", "where", "message"), [
    (doc(concurrency={"group": "x-${{ steps.a.status }}"}), (None, "concurrency.group"),
     "steps.* is not known when an execution starts"),
    (doc(concurrency={"group": "${{ trigger.ref"}), (None, "concurrency.group"), "unclosed"),
    (doc(concurrency={"group": ""}), (None, "concurrency.group"), "at least 1 character"),
    (doc(concurrency={"group": "g", "queue": 1}), (None, "concurrency.queue"), "unknown field"),
    (doc(steps=[{"name": "a", "type": "custom", "config": {"script": "true"},
                 "concurrency": "x-${{ steps.ghost.status }}"}]),
     ("a", "concurrency.group"), "unknown step 'ghost' in expression"),
    (doc(report_status={"provider": "bitbucket", "token": "T"}), (None, "report_status.provider"),
     "'github' or 'gitlab'"),
    (doc(report_status={"provider": "github", "token": "T", "repository": "just-a-name"}),
     (None, "report_status.repository"), "a GitHub repository is 'owner/name'"),
    (doc(report_status={"provider": "github", "token": "bad name"}),
     (None, "report_status.token"), "should match"),
    (doc(report_status={"provider": "gitlab", "token": "T", "base_url": "ftp://x"}),
     (None, "report_status.base_url"), "must be an http:// or https:// URL"),
])
def test_errors_name_the_field(fields: dict[str, Any], where: tuple[str | None, str],
                               message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(fields)
    details = [(d.step, d.field, d.message) for d in caught.value.details]
    assert any((d[0], d[1]) == where and message in d[2] for d in details), details


def test_a_gitlab_project_may_be_a_path_or_an_id() -> None:
    for repository in ("group/sub/project", "1234"):
        spec = parse(doc(report_status={"provider": "gitlab", "token": "T",
                                                   "repository": repository}))
        assert spec.report_status is not None


@pytest.mark.parametrize(("template", "name"), [
    ("deploy-${{ trigger.branch }}", "deploy-main"),
    ("  ${{ vars.missing }}  ", None),
    ("x" * 300, "x" * 242 + "-"),
])
def test_group_names(template: str, name: str | None) -> None:
    ctx = expr.EvalContext(trigger={"branch": "main"})
    rendered = group_name(template, ctx)
    if name is None or not name.endswith("-"):
        assert rendered == name
    else:
        assert rendered is not None and len(rendered) == 255 and rendered.startswith(name)


def test_an_execution_group_is_rendered_from_its_trigger() -> None:
    options = {"concurrency": {"group": "deploy-${{ trigger.branch }}-${{ vars.env }}",
                               "cancel_in_progress": True}, "env": {}}
    trigger = {"ref": "refs/heads/release/1.x", "variables": {"env": "prod"}}
    assert execution_group(options, trigger) == ("deploy-release/1.x-prod", True)
    assert execution_group({"concurrency": None}, trigger) is None
