from __future__ import annotations

from pathlib import Path

import pytest

from ansflow.errors import DefinitionError
from tests.steps.conftest import RunStep


async def test_inline_bash_script_streams_output_and_succeeds(run_step: RunStep) -> None:
    run = await run_step("custom", {"script": "echo hello; echo world >&2"})
    assert run.result.success
    assert run.result.exit_code == 0
    assert run.log.lines[-2:] == ["hello", "world"]


async def test_failing_command_in_the_middle_fails_the_script(run_step: RunStep) -> None:
    run = await run_step("custom", {"script": "false\necho not reached"})
    assert not run.result.success
    assert run.result.exit_code == 1
    assert "not reached" not in run.log.lines[1:]


async def test_python_shell_gets_args(run_step: RunStep) -> None:
    run = await run_step("custom", {"script": "import sys; print(sys.argv[1:])",
                                    "shell": "python", "args": ["a", "b"]})
    assert run.result.success
    assert "['a', 'b']" in run.log.lines


async def test_file_from_workspace(run_step: RunStep, workspace: Path) -> None:
    (workspace / "ci.sh").write_text('echo "args: $*"\nexit 3\n')
    run = await run_step("custom", {"file": "ci.sh", "shell": "sh", "args": ["x"]})
    assert not run.result.success
    assert run.result.exit_code == 3
    assert "args: x" in run.log.lines


async def test_missing_file_is_a_clear_failure(run_step: RunStep) -> None:
    run = await run_step("custom", {"file": "nope.sh"})
    assert not run.result.success
    assert run.result.error == "script file 'nope.sh' not found in the workspace"


def test_config_needs_exactly_one_source() -> None:
    from ansflow.steps.base import get_step_type

    with pytest.raises(DefinitionError) as info:
        get_step_type("custom").parse_config({"shell": "bash"}, step="smoke")
    assert "exactly one of 'script' or 'file'" in str(info.value)
    with pytest.raises(DefinitionError) as info:
        get_step_type("custom").parse_config({"script": "x", "bogus": 1}, step="smoke")
    assert info.value.details[0].field == "config.bogus"
    assert info.value.details[0].message == "unknown field"
    assert info.value.details[0].step == "smoke"
