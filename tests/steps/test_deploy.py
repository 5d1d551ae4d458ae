"""The deploy step: local release directories, the script target and config validation.
The command-based targets are in ``test_deploy_remote.py``."""

from __future__ import annotations

import fcntl
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.steps.base import get_step_type
from ansflow.steps.deploy.local import LOCK_FILE, ReleaseError, deploy_release, new_release_id
from ansflow.steps.deploy.step import RECORD_KEYS, DeployConfig
from ansflow.steps.deploy.targets import LocalTarget
from tests.steps.conftest import RunStep, StepRun

COMMIT = "9fceb02d0ae598e95dc970b74767f19372d61af8"


def write_dist(workspace: Path, content: str) -> None:
    (workspace / "dist" / "static").mkdir(parents=True, exist_ok=True)
    (workspace / "dist" / "app.txt").write_text(content)
    (workspace / "dist" / "static" / "site.css").write_text("body {}\n")


async def deploy(run_step: RunStep, root: Path, version: str | None = None,
                 **config: Any) -> StepRun:
    doc: dict[str, Any] = {"target": "local", "environment": "staging", "path": str(root),
                           "source": "dist", **config}
    if version is not None:
        doc["version"] = version
    return await run_step("deploy", doc, env={"ANSFLOW_COMMIT": COMMIT})


def releases(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "releases").iterdir())


def current(root: Path) -> str:
    return os.readlink(root / "current")


async def test_two_deploys_make_two_releases_and_current_follows(
        run_step: RunStep, workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "srv" / "shop"
    write_dist(workspace, "one\n")
    first = await deploy(run_step, root)
    assert first.result.success, first.result.error
    write_dist(workspace, "two\n")
    second = await deploy(run_step, root, version="v2")
    assert second.result.success, second.result.error

    record = second.result.result
    assert tuple(record) == RECORD_KEYS
    assert [first.result.result["release"], record["release"]] == releases(root)
    assert first.result.result["release"].endswith("Z-9fceb02")
    assert record["release"].endswith("Z-v2")
    assert current(root) == f"releases/{record['release']}"
    assert (root / "current" / "app.txt").read_text() == "two\n"
    assert (root / "current" / "static" / "site.css").read_text() == "body {}\n"
    assert (root / "releases" / first.result.result["release"] / "app.txt").read_text() == "one\n"
    assert {k: record[k] for k in ("environment", "target", "version", "commit", "path",
                                   "rolled_back_from", "commands", "source", "url")} == {
        "environment": "staging", "target": "local", "version": "v2", "commit": COMMIT,
        "path": str(root), "rolled_back_from": None, "commands": [], "source": "dist",
        "url": None}
    assert f"deployed release {record['release']} in {root} " \
           f"(current was {first.result.result['release']})" in second.log.lines
    assert datetime.fromisoformat(record["deployed_at"]).tzinfo is not None


async def test_version_defaults_to_the_execution_id_without_a_commit(
        run_step: RunStep, workspace: Path, tmp_path: Path) -> None:
    write_dist(workspace, "x")
    run = await run_step("deploy", {"target": "local", "environment": "qa",
                                    "path": str(tmp_path / "root"), "source": "dist",
                                    "url": "https://qa.example.invalid"},
                         env={"ANSFLOW_COMMIT": ""})
    assert run.result.success, run.result.error
    assert run.result.result["version"] == "1"
    assert run.result.result["commit"] is None
    assert run.result.result["url"] == "https://qa.example.invalid"


async def test_keep_prunes_old_releases(run_step: RunStep, workspace: Path,
                                        tmp_path: Path) -> None:
    root = tmp_path / "root"
    made = []
    for n in range(4):
        write_dist(workspace, f"{n}\n")
        run = await deploy(run_step, root, version=f"v{n}", keep=2)
        assert run.result.success, run.result.error
        made.append(run.result.result["release"])
    assert releases(root) == made[2:]
    assert current(root) == f"releases/{made[3]}"
    assert f"removed old releases: {made[1]}" in run.log.lines


async def test_pruning_never_removes_current_or_previous(run_step: RunStep, workspace: Path,
                                                         tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_dist(workspace, "x")
    made = [(await deploy(run_step, root, version=f"v{n}")).result.result["release"]
            for n in range(3)]
    back = await deploy(run_step, root, rollback=True)
    assert back.result.success, back.result.error
    assert current(root) == f"releases/{made[1]}"
    # keep 1: the new release is current and v1 (current before) is previous; v0 and the
    # rolled-back v2 go
    run = await deploy(run_step, root, version="v3", keep=1)
    assert run.result.success, run.result.error
    assert releases(root) == [made[1], run.result.result["release"]]


async def test_rollback_switches_back_and_stops_at_the_oldest(
        run_step: RunStep, workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_dist(workspace, "one\n")
    first = (await deploy(run_step, root, version="v1")).result.result["release"]
    write_dist(workspace, "two\n")
    second = (await deploy(run_step, root, version="v2")).result.result["release"]

    back = await deploy(run_step, root, rollback=True)
    assert back.result.success, back.result.error
    assert current(root) == f"releases/{first}"
    assert (root / "current" / "app.txt").read_text() == "one\n"
    record = back.result.result
    assert (record["release"], record["rolled_back_from"], record["version"]) == (
        first, second, "v1")
    assert releases(root) == [first, second]

    again = await deploy(run_step, root, rollback=True)
    assert not again.result.success
    assert again.result.error == (f"cannot roll back {root}: there is no release before the "
                                  f"current one ({first})")
    assert current(root) == f"releases/{first}"


async def test_rollback_with_a_single_release_fails_clearly(
        run_step: RunStep, workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_dist(workspace, "x")
    only = (await deploy(run_step, root)).result.result["release"]
    run = await deploy(run_step, root, rollback=True)
    assert not run.result.success
    assert run.result.error_code == "deploy_refused"
    assert run.result.retryable is False
    assert f"there is no release before the current one ({only})" in (run.result.error or "")
    assert current(root) == f"releases/{only}"


async def test_rollback_with_nothing_deployed_fails(run_step: RunStep, tmp_path: Path) -> None:
    run = await deploy(run_step, tmp_path / "empty", rollback=True)
    assert not run.result.success
    assert run.result.error == f"cannot roll back: nothing is deployed at {tmp_path / 'empty'}"


async def test_missing_source_fails_naming_it(run_step: RunStep, tmp_path: Path) -> None:
    run = await deploy(run_step, tmp_path / "root")
    assert not run.result.success
    assert run.result.error == "source 'dist' does not exist in the workspace"
    assert run.result.error_code == "source_missing"
    assert not (tmp_path / "root").exists()


async def test_source_leaving_the_workspace_fails(run_step: RunStep, tmp_path: Path) -> None:
    run = await deploy(run_step, tmp_path / "root", source="../elsewhere")
    assert run.result.error == "source '../elsewhere' leaves the workspace"


async def test_a_single_file_source_lands_in_the_release(run_step: RunStep, workspace: Path,
                                                         tmp_path: Path) -> None:
    (workspace / "app.jar").write_bytes(b"PK\x03\x04")
    run = await deploy(run_step, tmp_path / "root", source="app.jar")
    assert run.result.success, run.result.error
    assert (tmp_path / "root" / "current" / "app.jar").read_bytes() == b"PK\x03\x04"


async def test_current_that_is_a_directory_is_refused(run_step: RunStep, workspace: Path,
                                                      tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "current").mkdir(parents=True)
    write_dist(workspace, "x")
    run = await deploy(run_step, root)
    assert not run.result.success
    assert run.result.error == (f"{root / 'current'} exists and is not a symlink; "
                                "move it away to deploy here")
    assert releases(root) == []


async def test_a_deployment_in_progress_blocks_another(run_step: RunStep, workspace: Path,
                                                       tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_dist(workspace, "x")
    with (root / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        run = await deploy(run_step, root)
    assert run.result.error == f"another deployment to {root} is in progress"
    assert (await deploy(run_step, root)).result.success


async def test_leftovers_of_a_crashed_deployment_are_removed(
        run_step: RunStep, workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "releases" / ".partial-20240101T000000000000Z-v0").mkdir(parents=True)
    (root / ".current-0123").symlink_to("releases/nowhere")
    write_dist(workspace, "x")
    run = await deploy(run_step, root)
    assert run.result.success, run.result.error
    assert releases(root) == [run.result.result["release"]]
    assert sorted(p.name for p in root.iterdir()) == [LOCK_FILE, "current", "releases"]


async def test_deploy_root_inside_the_source_is_refused(run_step: RunStep,
                                                        workspace: Path) -> None:
    run = await run_step("deploy", {"target": "local", "environment": "dev",
                                    "path": str(workspace / "out")})
    assert run.result.error == f"deploy path {workspace / 'out'} lies inside the source {workspace}"


def test_a_stopped_copy_never_becomes_current(workspace: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_dist(workspace, "x")
    first = deploy_release(root, workspace / "dist", "v1", 5, datetime.now(UTC))
    stop = threading.Event()
    stop.set()
    with pytest.raises(ReleaseError, match="cancelled while copying"):
        deploy_release(root, workspace / "dist", "v2", 5, datetime.now(UTC), stop)
    assert releases(root) == [first.release]
    assert current(root) == f"releases/{first.release}"


def test_release_ids_sort_by_time_even_when_the_clock_steps_back() -> None:
    later = datetime(2030, 5, 1, 12, 0, 0, 5, tzinfo=UTC)
    earlier = datetime(2030, 5, 1, 11, 0, tzinfo=UTC)
    first = new_release_id([], "v1 /x", later)
    assert first == "20300501T120000000005Z-v1__x"
    second = new_release_id([first], "v0", earlier)
    assert second == "20300501T120000000006Z-v0"
    assert new_release_id([], "", later).endswith("Z-unversioned")


async def test_script_target_gets_the_deployment_in_its_environment(
        run_step: RunStep, workspace: Path) -> None:
    write_dist(workspace, "x")
    script = 'echo "env=$ANSFLOW_DEPLOY_ENVIRONMENT version=$ANSFLOW_DEPLOY_VERSION"\n' \
             'ls "$ANSFLOW_DEPLOY_SOURCE"'
    run = await run_step("deploy", {"target": "script", "environment": "prod", "source": "dist",
                                    "script": script, "url": "https://shop.example.invalid"},
                         env={"ANSFLOW_COMMIT": COMMIT}, step_name="ship")
    assert run.result.success, run.result.error
    assert "env=prod version=9fceb02" in run.log.lines
    assert run.log.lines[run.log.lines.index("env=prod version=9fceb02") + 1:][:2] == [
        "app.txt", "static"]
    record = run.result.result
    assert record["commands"] == [["bash", "-eo", "pipefail", "-c", script, "ship"]]
    assert (record["target"], record["url"], record["path"]) == (
        "script", "https://shop.example.invalid", None)


async def test_failing_script_fails_the_step(run_step: RunStep) -> None:
    run = await run_step("deploy", {"target": "script", "environment": "prod",
                                    "script": "echo $ANSFLOW_DEPLOY_SOURCE; exit 4"})
    assert not run.result.success
    assert run.result.error == "deploy script exited with code 4"
    assert run.result.exit_code == 4
    assert run.result.result["commands"][0][:4] == ["bash", "-eo", "pipefail", "-c"]
    assert run.log.lines[-1] == str(run.ctx.workspace.resolve())


def invalid(config: dict[str, Any]) -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        get_step_type("deploy").parse_config(config, step="ship")
    return info.value


@pytest.mark.parametrize(("config", "field", "message"), [
    ({"target": "local", "environment": "prod"}, "config.path", "Field required"),
    ({"target": "local", "local": {}, "environment": "prod"}, "config.local.path",
     "Field required"),
    ({"target": "local", "path": "/srv/x"}, "config.environment", "Field required"),
    ({"target": "local", "environment": "prod", "path": "srv"}, "config.path",
     "path 'srv' must be absolute"),
    ({"target": "local", "environment": "prod", "path": "/x", "keep": 0}, "config.keep",
     "Input should be greater than or equal to 1"),
    ({"target": "local", "environment": "prod", "path": "/x", "host": "h"}, "config.host",
     "unknown field"),
    ({"target": "ssh", "environment": "prod", "host": "h"}, "config.remote_path",
     "Field required"),
    ({"target": "helm", "environment": "prod", "chart": "c"}, "config.release",
     "Field required"),
    ({"target": "script", "environment": "prod"}, "config.script", "Field required"),
    ({"target": "kubernetes", "environment": "prod", "deployment": "web"}, "config",
     "give 'manifests', or 'deployment' with 'container' and 'image'"),
    ({"target": "kubernetes", "environment": "prod", "image": "i:1", "deployment": "web"},
     "config", "'image' needs 'deployment' and 'container' (what to update)"),
    ({"target": "kubernetes", "environment": "prod", "manifests": ["/etc/k8s.yaml"]},
     "config.manifests", "glob '/etc/k8s.yaml' must be relative and stay "
     "inside the working directory"),
    ({"target": "script", "environment": "prod", "script": "x", "local": {"path": "/x"}},
     "config", "settings for target 'local' given, but the target is 'script'"),
    ({"target": "ftp", "environment": "prod"}, "config.target",
     "Input should be 'local', 'ssh', 'kubernetes', 'helm', 'docker_compose' or 'script'"),
])
def test_invalid_configs_name_the_field(config: dict[str, Any], field: str,
                                        message: str) -> None:
    error = invalid(config)
    assert error.message == "step 'ship': invalid config for type 'deploy'"
    assert [(d.field, d.message) for d in error.details] == [(field, message)]


def test_flat_and_nested_forms_give_the_same_config() -> None:
    step = get_step_type("deploy")
    flat = step.parse_config({"target": "local", "environment": "prod", "path": "/srv/x",
                              "keep": 3}, step="s")
    nested = step.parse_config({"target": "local", "environment": "prod",
                                "local": {"path": "/srv/x", "keep": 3}}, step="s")
    assert isinstance(flat, DeployConfig)
    assert flat == nested
    assert flat.settings == LocalTarget(path="/srv/x", keep=3)
    script = step.parse_config({"target": "script", "environment": "e", "script": "x"}, step="s")
    assert script.settings == step.parse_config(
        {"target": "script", "environment": "e", "script": {"script": "x"}}, step="s").settings


def test_expressions_in_typed_fields_pass_lenient_validation() -> None:
    config = {"target": "local", "environment": "${{ vars.env }}",
              "path": "${{ vars.root }}", "keep": "${{ vars.keep }}"}
    get_step_type("deploy").parse_config(config, step="s", lenient=True)
    error = invalid(config)
    assert {d.field for d in error.details} == {"config.environment", "config.path",
                                                 "config.keep"}
