from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.steps.base import get_step_type
from tests.steps.conftest import RunStep
from tests.steps.test_build import calls, copy_fixture, stub, stub_env

REPORTS = Path(__file__).parent.parent / "fixtures" / "reports"
# python3 must be the interpreter running these tests: it has pytest
VENV_ENV = {"PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def put_report(workspace: Path, sample: str, as_name: str) -> None:
    target = workspace / as_name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPORTS / sample, target)


async def test_pytest_preset_reads_its_junit_report(run_step: RunStep, workspace: Path) -> None:
    copy_fixture("pytest_project", workspace)
    run = await run_step("test", {"framework": "pytest"}, env=VENV_ENV, step_name="unit")
    result = run.result
    assert not result.success
    assert result.exit_code == 1
    r = result.result
    assert (r["total"], r["passed"], r["failed"], r["skipped"], r["errors"]) == (3, 2, 1, 0, 0)
    [failed] = r["failed_tests"]
    assert failed["name"] == "check_calc::test_add_wrong"
    assert "two and two make four" in failed["message"]
    assert r["reports"] == [".ansflow/test-reports/unit/junit.xml"]
    assert result.error == ("1 of 3 tests failed (check_calc::test_add_wrong); "
                            "python3 exited with code 1")
    assert r["command"].startswith("python3 -m pytest --junitxml=")
    assert r["exit_code"] == 1
    assert "FAILED check_calc.py::test_add_wrong - AssertionError: two and two make four" \
        in run.log.lines


async def test_pytest_preset_passes_args_and_forgets_old_reports(
        run_step: RunStep, workspace: Path) -> None:
    copy_fixture("pytest_project", workspace)
    await run_step("test", {"framework": "pytest"}, env=VENV_ENV, step_name="unit")
    run = await run_step("test", {"framework": "pytest", "args": ["-k", "not wrong"]},
                         env=VENV_ENV, step_name="unit")
    assert run.result.success, run.result.error
    r = run.result.result
    assert (r["total"], r["passed"], r["failed"]) == (2, 2, 0)
    assert r["failed_tests"] == []


async def test_unittest_without_reports_has_unknown_counts(run_step: RunStep,
                                                           workspace: Path) -> None:
    (workspace / "test_ok.py").write_text(
        "import unittest\n\nclass T(unittest.TestCase):\n"
        "    def test_ok(self) -> None:\n        self.assertEqual(1, 1)\n")
    run = await run_step("test", {"framework": "unittest"}, env=VENV_ENV)
    assert run.result.success, run.result.error
    r = run.result.result
    assert (r["total"], r["passed"], r["failed"], r["reports"]) == (None, None, None, [])
    assert r["command"] == "python3 -m unittest discover"

    (workspace / "test_ok.py").write_text((workspace / "test_ok.py").read_text()
                                          .replace("(1, 1)", "(1, 2)"))
    run = await run_step("test", {"framework": "unittest"}, env=VENV_ENV)
    assert not run.result.success
    assert run.result.error == "python3 exited with code 1"
    assert run.result.result["total"] is None


async def test_failed_tests_fail_the_step_even_when_the_command_exits_0(
        run_step: RunStep, workspace: Path) -> None:
    put_report(workspace, "jest-junit.xml", "reports/junit.xml")
    run = await run_step("test", {"command": "true", "reports": ["reports/*.xml"]})
    assert not run.result.success
    assert run.result.exit_code == 0
    assert run.result.error == "1 of 4 tests failed (cart applies a coupon)"
    assert run.result.result["reports"] == ["reports/junit.xml"]


async def test_reports_from_several_globs_add_up(run_step: RunStep, workspace: Path) -> None:
    put_report(workspace, "pytest-junit.xml", "py/junit.xml")
    put_report(workspace, "surefire-TEST-com.example.CalculatorTest.xml",
               "java/TEST-com.example.CalculatorTest.xml")
    run = await run_step("test", {"command": "exit 1", "reports": ["py/*.xml", "java/TEST-*.xml",
                                                                   "*/junit.xml"]})
    r = run.result.result
    assert (r["total"], r["failed"], r["errors"]) == (10, 2, 2)
    assert r["reports"] == ["py/junit.xml", "java/TEST-com.example.CalculatorTest.xml"]
    assert run.result.error == (
        "4 of 10 tests failed (tests.test_shop::test_discount, tests.test_db::test_query, "
        "com.example.CalculatorTest::dividesByZero, ...); bash command exited with code 1")


async def test_a_reports_glob_that_matches_nothing_fails(run_step: RunStep,
                                                         workspace: Path) -> None:
    run = await run_step("test", {"command": "echo ran", "reports": ["build/test-*.xml"]})
    assert not run.result.success
    assert run.result.error == "no file matches 'build/test-*.xml'"
    assert run.result.result["total"] is None


async def test_a_malformed_report_fails_naming_the_file(run_step: RunStep,
                                                        workspace: Path) -> None:
    run = await run_step("test", {"command": "mkdir -p out && echo '<testsuite><oops' > out/r.xml",
                                  "reports": ["out/*.xml"]})
    assert not run.result.success
    assert run.result.error_code == "invalid_report"
    assert run.result.error is not None
    assert run.result.error.startswith("test report 'out/r.xml' is not well-formed XML")


async def test_coverage_below_the_minimum_fails(run_step: RunStep, workspace: Path) -> None:
    put_report(workspace, "cobertura-coverage.xml", "coverage.xml")
    run = await run_step("test", {"command": "true", "coverage": "coverage.xml",
                                  "coverage_min": 80})
    assert not run.result.success
    assert run.result.error == "coverage 71.3% is below the minimum 80%"
    assert run.result.result["coverage"] == {"percent": 71.3, "lines_valid": 1000,
                                             "lines_covered": 713}

    run = await run_step("test", {"command": "true", "coverage": "*.xml", "coverage_min": 71.3})
    assert run.result.success, run.result.error


async def test_a_missing_coverage_report_fails(run_step: RunStep) -> None:
    run = await run_step("test", {"command": "true", "coverage": "cov/*.xml", "coverage_min": 1})
    assert not run.result.success
    assert run.result.error == "no file matches 'cov/*.xml'"
    assert run.result.result["coverage"] is None


async def test_maven_preset_reads_surefire_reports(run_step: RunStep, workspace: Path,
                                                   tmp_path: Path) -> None:
    sample = REPORTS / "surefire-TEST-com.example.CalculatorTest.xml"
    target = "target/surefire-reports/TEST-com.example.CalculatorTest.xml"
    stub(tmp_path / "bin", "mvn", f"mkdir -p target/surefire-reports && cp {sample} {target}"
                                  " && exit 1")
    run = await run_step("test", {"framework": "maven", "args": ["-o"]}, env=stub_env(tmp_path))
    assert calls(tmp_path) == ["mvn -B test -o"]
    r = run.result.result
    assert (r["total"], r["passed"], r["failed"], r["errors"], r["skipped"]) == (5, 2, 1, 1, 1)
    assert r["reports"] == [target]
    assert run.result.error is not None
    assert run.result.error.endswith("mvn exited with code 1")


async def test_a_preset_without_reports_is_not_a_report_failure(run_step: RunStep,
                                                                tmp_path: Path) -> None:
    stub(tmp_path / "bin", "mvn")
    stub(tmp_path / "bin", "go")
    run = await run_step("test", {"framework": "maven"}, env=stub_env(tmp_path))
    assert run.result.success, run.result.error
    assert run.result.result["total"] is None
    run = await run_step("test", {"framework": "go", "working_dir": "."}, env=stub_env(tmp_path))
    assert run.result.success, run.result.error
    assert calls(tmp_path) == ["mvn -B test", "go test ./..."]


async def test_a_missing_tool_is_a_clear_failure(run_step: RunStep) -> None:
    run = await run_step("test", {"framework": "maven"}, env={"PATH": "/nonexistent"})
    assert not run.result.success
    assert run.result.error == "tool 'mvn' is not installed on this worker"
    assert run.result.error_code == "tool_missing"
    assert run.result.retryable is False


async def test_working_dir_scopes_command_and_reports(run_step: RunStep, workspace: Path) -> None:
    put_report(workspace, "pytest-junit.xml", "svc/reports/junit.xml")
    run = await run_step("test", {"command": "test -f reports/junit.xml", "working_dir": "svc",
                                  "reports": ["reports/*.xml"]})
    assert run.result.result["reports"] == ["svc/reports/junit.xml"]
    assert run.result.result["total"] == 5


@pytest.mark.parametrize(("config", "field", "words"), [
    ({}, "config", ["'command'", "'framework'"]),
    ({"command": "true", "framework": "pytest"}, "config", ["exactly one"]),
    ({"framework": "nose"}, "config.framework", ["'pytest'", "'maven'"]),
    ({"command": "true", "coverage_min": 80}, "config", ["'coverage'"]),
    ({"command": "true", "coverage": "c.xml", "coverage_min": 120}, "config.coverage_min",
     ["100"]),
    ({"command": "true", "coverage": "/tmp/c.xml"}, "config.coverage", ["'/tmp/c.xml'"]),
    ({"command": "true", "reports": ["../*.xml"]}, "config.reports", ["'../*.xml'"]),
])
def test_config_errors_name_the_field(config: dict[str, Any], field: str,
                                      words: list[str]) -> None:
    with pytest.raises(DefinitionError) as info:
        get_step_type("test").parse_config(config, step="unit")
    [detail] = info.value.details
    assert detail.field == field
    for word in words:
        assert word in detail.message
