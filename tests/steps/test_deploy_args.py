"""Deploy targets refuse config values that a tool would read as options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.resources import Resources
from ansflow.steps.base import get_step_type
from tests.builders import pipeline_doc
from tests.engine.harness import run_doc

HOSTILE = "-oProxyCommand=touch /tmp/ansflow-pwned"

BASE: dict[str, dict[str, Any]] = {
    "ssh": {"host": "web1.example.invalid", "remote_path": "/srv/www"},
    "kubernetes": {"deployment": "shop", "container": "api", "image": "shop:1"},
    "helm": {"release": "shop", "chart": "charts/shop"},
    "docker_compose": {},
}


@pytest.mark.parametrize(("target", "key", "value", "field"), [
    ("ssh", "host", HOSTILE, "config.host"),
    ("ssh", "host", "web1 -oProxyCommand=x", "config.host"),
    ("ssh", "user", "-lroot", "config.user"),
    ("ssh", "user", "a@evil", "config.user"),
    ("ssh", "host", "web1\n-o", "config.host"),
    ("kubernetes", "context", "--kubeconfig=/etc/shadow", "config.context"),
    ("kubernetes", "namespace", "-n", "config.namespace"),
    ("kubernetes", "deployment", "--all", "config.deployment"),
    ("kubernetes", "container", "-x", "config.container"),
    ("kubernetes", "image", "--overrides={}", "config.image"),
    ("helm", "release", "--post-renderer=/bin/sh", "config.release"),
    ("helm", "chart", "-h", "config.chart"),
    ("helm", "namespace", "--kube-token=x", "config.namespace"),
    ("helm", "values", ["--post-renderer=x"], "config.values[0]"),
    ("helm", "set", {"--post-renderer": "x"}, "config.set.--post-renderer.[key]"),
    ("docker_compose", "file", "--env-file=/etc/shadow", "config.file"),
    ("docker_compose", "project", "-p", "config.project"),
    ("docker_compose", "services", ["--build"], "config.services[0]"),
])
def test_option_looking_values_are_definition_errors(target: str, key: str, value: Any,
                                                     field: str) -> None:
    raw = {"target": target, "environment": "prod", **BASE[target], key: value}
    with pytest.raises(DefinitionError) as info:
        get_step_type("deploy").parse_config(raw, step="ship")
    [detail] = info.value.details
    assert (detail.step, detail.field) == ("ship", field)
    assert "would be read as an option" in detail.message or "whitespace" in detail.message \
        or "control characters" in detail.message


def test_ordinary_values_pass() -> None:
    raw = {"target": "ssh", "environment": "prod", "host": "web-1.example.invalid",
           "user": "deploy", "remote_path": "-odd/but/not/an/argv/item"}
    config = get_step_type("deploy").parse_config(raw, step="ship")
    assert config.ssh.host == "web-1.example.invalid"


async def test_a_substituted_option_is_refused_before_anything_runs(
        resources: Resources, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    ship = {"name": "ship", "type": "deploy", "config": {
        "target": "ssh", "environment": "prod", "host": "${{ vars.host }}",
        "remote_path": "/srv/www"}}
    ran = await run_doc(resources, pipeline_doc(ship), trigger={
        "variables": {"host": f"-oProxyCommand=touch {pwned}"}})
    assert ran.status == "failed"
    step = ran.step("ship")
    assert step.status == "failed"
    assert step.error is not None and "config.host" in step.error
    assert not pwned.exists()
