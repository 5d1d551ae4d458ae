from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.steps.base import get_step_type
from tests.steps.conftest import RunStep

FIXTURES = Path(__file__).parent.parent / "fixtures"
# python3 must be the interpreter running the tests: it has setuptools and wheel
VENV_PATH = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def copy_fixture(name: str, workspace: Path, into: str = ".") -> Path:
    target = workspace / into
    shutil.copytree(FIXTURES / name, target, dirs_exist_ok=True)
    return target


def stub(bin_dir: Path, name: str, body: str = "") -> None:
    """An executable that records its argv (one line per call) in $STUB_LOG."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "$(basename "$0") $*" >> "$STUB_LOG"\n{body}\n')
    path.chmod(0o755)


def stub_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "STUB_LOG": str(tmp_path / "calls.log")}


def calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.log").read_text().splitlines()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_make_builds_and_collects_the_artifact(run_step: RunStep, workspace: Path) -> None:
    copy_fixture("make_project", workspace)
    run = await run_step("build", {"tool": "make", "artifacts": ["dist/*.txt"]})
    assert run.result.success, run.result.error
    built = workspace / "dist" / "hello.txt"
    assert built.read_text() == "hello from version 1.0\n"
    assert run.result.exit_code == 0
    assert run.result.result["artifacts"] == [{
        "name": "hello.txt", "path": "dist/hello.txt", "size": built.stat().st_size,
        "sha256": sha256(built)}]
    assert run.ctx.kept == ["dist/hello.txt"]
    assert run.result.result["command"] == "make"
    assert run.result.result["exit_code"] == 0
    assert run.result.result["duration_seconds"] > 0
    assert "$ make" in run.log.lines


async def test_args_are_appended_to_the_preset(run_step: RunStep, workspace: Path) -> None:
    copy_fixture("make_project", workspace)
    run = await run_step("build", {"tool": "make", "args": ["VERSION=2.5"]})
    assert run.result.success, run.result.error
    assert run.result.result["command"] == "make VERSION=2.5"
    assert (workspace / "dist" / "hello.txt").read_text() == "hello from version 2.5\n"


async def test_a_failing_build_names_the_command(run_step: RunStep, workspace: Path) -> None:
    copy_fixture("make_project", workspace)
    run = await run_step("build", {"tool": "make", "args": ["broken"],
                                   "artifacts": ["dist/*.txt"]})
    assert not run.result.success
    assert run.result.exit_code == 2
    assert run.result.error == "make broken exited with code 2"
    assert run.result.result["artifacts"] == []
    assert "compiling the broken target" in run.log.lines
    assert run.ctx.kept == []


async def test_python_builds_a_wheel_offline(run_step: RunStep, workspace: Path) -> None:
    copy_fixture("tiny_project", workspace)
    run = await run_step("build", {"tool": "python", "artifacts": ["dist/*.whl"]},
                         env={"PATH": VENV_PATH, "PIP_NO_INDEX": "1"})
    assert run.result.success, run.log.text
    [artifact] = run.result.result["artifacts"]
    wheel = workspace / "dist" / "tinyproject-0.1.0-py3-none-any.whl"
    assert artifact == {"name": wheel.name, "path": f"dist/{wheel.name}",
                        "size": wheel.stat().st_size, "sha256": sha256(wheel)}
    assert run.ctx.kept == [f"dist/{wheel.name}"]
    assert run.result.result["command"].startswith("python3 -m pip wheel --no-deps")


async def test_a_missing_tool_is_a_clear_failure(run_step: RunStep, workspace: Path) -> None:
    run = await run_step("build", {"tool": "maven"}, env={"PATH": "/nonexistent"})
    assert not run.result.success
    assert run.result.error == "tool 'mvn' is not installed on this worker"
    assert run.result.error_code == "tool_missing"
    assert run.result.retryable is False


@pytest.mark.parametrize(("wrapper", "expected"), [(True, "gradlew"), (False, "gradle")])
async def test_gradle_prefers_the_wrapper(run_step: RunStep, workspace: Path, tmp_path: Path,
                                          wrapper: bool, expected: str) -> None:
    stub(tmp_path / "bin", "gradle")
    if wrapper:
        stub(workspace, "gradlew")
    run = await run_step("build", {"tool": "gradle", "args": ["--offline"]},
                         env=stub_env(tmp_path))
    assert run.result.success, run.result.error
    assert calls(tmp_path) == [f"{expected} build --offline"]


async def test_npm_runs_ci_then_build(run_step: RunStep, tmp_path: Path) -> None:
    stub(tmp_path / "bin", "npm")
    run = await run_step("build", {"tool": "npm", "args": ["--", "--prod"]},
                         env=stub_env(tmp_path))
    assert run.result.success, run.result.error
    assert calls(tmp_path) == ["npm ci", "npm run build -- --prod"]
    assert run.result.result["command"] == "npm ci && npm run build -- --prod"


async def test_npm_stops_at_the_first_failing_command(run_step: RunStep, tmp_path: Path) -> None:
    stub(tmp_path / "bin", "npm", "exit 1")
    run = await run_step("build", {"tool": "npm"}, env=stub_env(tmp_path))
    assert not run.result.success
    assert run.result.error == "npm ci exited with code 1"
    assert calls(tmp_path) == ["npm ci"]


async def test_docker_assembles_build_and_push(run_step: RunStep, workspace: Path,
                                               tmp_path: Path) -> None:
    stub(tmp_path / "bin", "docker")
    (workspace / "app").mkdir()
    run = await run_step("build", {
        "tool": "docker", "image": "registry.example.invalid/shop", "tags": ["1.4.2", "latest"],
        "dockerfile": "docker/Dockerfile", "build_args": {"PY": "3.11", "MODE": "prod"},
        "context": "app", "push": True, "args": ["--pull"],
    }, env=stub_env(tmp_path))
    assert run.result.success, run.result.error
    assert calls(tmp_path) == [
        "docker build -t registry.example.invalid/shop:1.4.2"
        " -t registry.example.invalid/shop:latest -f docker/Dockerfile"
        " --build-arg PY=3.11 --build-arg MODE=prod --pull app",
        "docker push registry.example.invalid/shop:1.4.2",
        "docker push registry.example.invalid/shop:latest",
    ]


async def test_docker_without_tags_or_push(run_step: RunStep, tmp_path: Path) -> None:
    stub(tmp_path / "bin", "docker")
    run = await run_step("build", {"tool": "docker", "image": "shop"}, env=stub_env(tmp_path))
    assert run.result.success, run.result.error
    assert calls(tmp_path) == ["docker build -t shop ."]


async def test_docker_context_must_stay_in_the_workspace(run_step: RunStep,
                                                         tmp_path: Path) -> None:
    stub(tmp_path / "bin", "docker")
    run = await run_step("build", {"tool": "docker", "image": "shop", "context": "../.."},
                         env=stub_env(tmp_path))
    assert not run.result.success
    assert run.result.error == "context '../..' leaves the workspace"
    assert not (tmp_path / "calls.log").exists()


async def test_shell_command_runs_with_pipefail_and_args(run_step: RunStep) -> None:
    run = await run_step("build", {"tool": "shell", "command": 'echo "built $1"',
                                   "args": ["fast"]})
    assert run.result.success, run.result.error
    assert "built fast" in run.log.lines
    run = await run_step("build", {"tool": "shell", "command": "false | cat"})
    assert not run.result.success
    assert run.result.error == "bash command exited with code 1"


async def test_command_overrides_the_preset(run_step: RunStep, workspace: Path) -> None:
    copy_fixture("make_project", workspace)
    run = await run_step("build", {"tool": "make", "command": "make VERSION=9 && cat dist/*"})
    assert run.result.success, run.result.error
    assert "hello from version 9" in run.log.lines


async def test_command_not_found_inside_a_command(run_step: RunStep) -> None:
    run = await run_step("build", {"tool": "shell", "command": "no-such-tool-xyz --version"})
    assert not run.result.success
    assert run.result.exit_code == 127
    assert run.result.error == "bash command exited with code 127 (a command was not found)"


async def test_an_artifact_glob_that_matches_nothing_fails(run_step: RunStep,
                                                          workspace: Path) -> None:
    copy_fixture("make_project", workspace)
    config: dict[str, Any] = {"tool": "make", "artifacts": ["dist/*.txt", "dist/*.tar.gz"]}
    run = await run_step("build", config)
    assert not run.result.success
    assert run.result.error == "artifacts: no file matches 'dist/*.tar.gz'"
    assert run.result.error_code == "no_artifacts"
    assert run.result.result["artifacts"] == []

    run = await run_step("build", {**config, "allow_empty_artifacts": True})
    assert run.result.success, run.result.error
    assert [a["name"] for a in run.result.result["artifacts"]] == ["hello.txt"]
    assert "artifacts: no file matches 'dist/*.tar.gz'" in run.log.lines


async def test_working_dir_is_where_the_tool_runs_and_artifacts_are_found(
        run_step: RunStep, workspace: Path) -> None:
    copy_fixture("make_project", workspace, into="services/hello")
    run = await run_step("build", {"tool": "make", "working_dir": "services/hello",
                                   "artifacts": ["dist/hello.txt"]})
    assert run.result.success, run.result.error
    assert run.result.result["artifacts"][0]["path"] == "dist/hello.txt"
    assert (workspace / "services" / "hello" / "dist" / "hello.txt").is_file()


@pytest.mark.parametrize(("working_dir", "error"), [
    ("../elsewhere", "working_dir: path '../elsewhere' leaves the workspace"),
    ("missing", "working_dir 'missing' does not exist in the workspace"),
])
async def test_bad_working_dir(run_step: RunStep, working_dir: str, error: str) -> None:
    run = await run_step("build", {"tool": "make", "working_dir": working_dir})
    assert not run.result.success
    assert run.result.error == error
    assert run.result.retryable is False


@pytest.mark.parametrize(("config", "field", "words"), [
    ({"tool": "bazel"}, "config.tool", ["'shell'", "'make'", "'docker'"]),
    ({"tool": "shell"}, "config", ["'command'"]),
    ({"tool": "make", "image": "shop"}, "config", ["'image'", "tool 'docker'"]),
    ({"tool": "docker"}, "config", ["'image'"]),
    ({"tool": "make", "artifacts": ["../secrets/*"]}, "config.artifacts", ["'../secrets/*'"]),
    ({"tool": "make", "artifacts": ["/etc/passwd"]}, "config.artifacts", ["'/etc/passwd'"]),
])
def test_config_errors_name_the_field(config: dict[str, Any], field: str,
                                      words: list[str]) -> None:
    with pytest.raises(DefinitionError) as info:
        get_step_type("build").parse_config(config, step="build")
    [detail] = info.value.details
    assert detail.step == "build"
    assert detail.field == field
    for word in words:
        assert word in detail.message
