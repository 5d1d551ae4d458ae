"""``test``: run the tests, then read their JUnit XML reports and Cobertura coverage.

The step fails when the command exits non-zero, when any reported test failed or
errored (even if the command exited 0), when a declared ``reports`` glob matches no
file, when a report is not readable JUnit XML, or when coverage is below
``coverage_min``. Without any report the counts are unknown (``None``) and the exit
code alone decides.

Substitution (``spec/substitution.py``): ``${{ }}`` in ``command`` reaches bash as a
quoted reference to a variable of the step's environment; ``framework`` cannot hold an
expression; ``args`` of a framework are tool arguments that a value cannot turn into an
option (after a ``command`` they are ``$1``..., plain data); ``working_dir``, ``reports``
and ``coverage`` are paths.
"""

from __future__ import annotations

import asyncio
import math
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ansflow.engine.process import ProcessResult
from ansflow.spec.substitution import ConfigPath, FieldKind
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType
from ansflow.steps.build import (
    BASH,
    RelativeGlobs,
    arguments_kind,
    missing_tool,
    with_exit_code,
    working_directory,
)
from ansflow.steps.files import glob_files, inside
from ansflow.steps.test.reports import (
    Coverage,
    ReportError,
    TestSummary,
    merge_coverage,
    parse_cobertura,
    parse_junit_files,
)

Framework = Literal["pytest", "unittest", "go", "npm", "maven"]


@dataclass(frozen=True, slots=True)
class Preset:
    argv: tuple[str, ...]
    reports: tuple[str, ...] = ()
    """JUnit globs the tool writes by itself; unlike declared ``reports``, finding none
    is not a failure (the counts are then unknown)."""
    junit_flag: bool = False
    """Whether AnsFlow adds ``--junitxml=<file>`` itself and reads that file."""


FRAMEWORKS: dict[str, Preset] = {
    "pytest": Preset(("python3", "-m", "pytest"), junit_flag=True),
    "unittest": Preset(("python3", "-m", "unittest", "discover")),
    "go": Preset(("go", "test", "./...")),
    "npm": Preset(("npm", "test")),
    "maven": Preset(("mvn", "-B", "test"), reports=("**/target/surefire-reports/TEST-*.xml",)),
}
"""``framework`` presets; ``args`` are appended to ``argv``. pytest's report goes to
``<workspace>/.ansflow/test-reports/<step>/junit.xml``, emptied before every attempt."""

REPORT_DIR = Path(".ansflow", "test-reports")
NAMES_IN_MESSAGE = 3


class TestConfig(StepConfig):
    __test__ = False

    command: str | None = None
    """A bash command line (run with ``-eo pipefail``); or use ``framework``."""
    framework: Framework | None = None
    args: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    reports: RelativeGlobs = Field(default_factory=list)
    """JUnit XML globs relative to ``working_dir``; each must match at least one file."""
    coverage: str | None = None
    """A Cobertura XML path or glob relative to ``working_dir``."""
    coverage_min: float | None = Field(None, ge=0, le=100)

    @field_validator("coverage")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (PurePosixPath(value).is_absolute()
                                  or ".." in PurePosixPath(value).parts or not value):
            raise ValueError(f"{value!r} must be relative and stay inside the working directory")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TestConfig:
        if (self.command is None) == (self.framework is None):
            raise ValueError("give exactly one of 'command' or 'framework'")
        if self.coverage_min is not None and self.coverage is None:
            raise ValueError("'coverage_min' needs 'coverage' (the Cobertura XML report)")
        return self


@dataclass(slots=True)
class Outcome:
    """What the reports said, read after the command ran."""

    summary: TestSummary | None = None
    files: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    """Matches that lead out of the workspace: not read."""
    coverage: Coverage | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReportPlan:
    workspace: Path
    cwd: Path
    declared: list[str]
    implied: tuple[str, ...]
    files: tuple[Path, ...]
    coverage: str | None


def _label(path: Path, workspace: Path) -> str:
    return str(path.relative_to(workspace)) if workspace in path.parents else str(path)


def _junit_files(plan: ReportPlan, outcome: Outcome) -> list[Path]:
    found: list[Path] = []
    for path in plan.files:
        if path.is_file() and inside(path, plan.workspace):
            found.append(path)
        elif path.is_symlink():
            outcome.outside.append(_label(path, plan.workspace))
    for pattern in [*plan.declared, *plan.implied]:
        matches = glob_files(plan.cwd, [pattern], plan.workspace)
        outcome.outside += matches.labels(plan.workspace)
        if not matches.files and pattern in plan.declared:
            outcome.unmatched.append(pattern)
        found += [p for p in matches.files if p not in found]
    return found


def read_outcome(plan: ReportPlan) -> Outcome:
    """Find and parse the reports (blocking: runs in a thread)."""
    outcome = Outcome()
    files = _junit_files(plan, outcome)
    labels = {path: _label(path, plan.workspace) for path in files}
    try:
        if files:
            outcome.summary = parse_junit_files(files, labels)
            outcome.files = list(labels.values())
        if plan.coverage is not None:
            matches = glob_files(plan.cwd, [plan.coverage], plan.workspace)
            outcome.outside += matches.labels(plan.workspace)
            if not matches.files:
                outcome.unmatched.append(plan.coverage)
            outcome.coverage = merge_coverage(
                parse_cobertura(p, _label(p, plan.workspace)) for p in matches.files)
    except ReportError as exc:
        outcome.error = str(exc)
    return outcome


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


class TestStep(StepType[TestConfig]):
    __test__ = False
    name = "test"
    config_model = TestConfig
    substitution: ClassVar[Mapping[str, FieldKind]] = {
        "framework": FieldKind.FIXED,
        "command": FieldKind.BASH,
        "working_dir": FieldKind.PATH,
        "reports[]": FieldKind.PATH,
        "coverage": FieldKind.PATH,
    }

    def field_kind(self, raw: Mapping[str, Any], path: ConfigPath) -> FieldKind:
        return arguments_kind(raw, path) or super().field_kind(raw, path)

    async def run(self, ctx: StepContext[TestConfig]) -> StepResult:
        config = ctx.config
        cwd = working_directory(ctx, config.working_dir)
        if isinstance(cwd, StepResult):
            return cwd
        preset = FRAMEWORKS[config.framework] if config.framework else Preset(())
        junit: tuple[Path, ...] = ()
        if preset.junit_flag:
            report_dir = ctx.resolve(None) / REPORT_DIR / ctx.step_name
            await asyncio.to_thread(_fresh_dir, report_dir)
            junit = (report_dir / "junit.xml",)
        argv = self._argv(ctx, preset, junit)
        if failure := missing_tool(ctx, argv, cwd):
            return failure
        proc = await ctx.run(argv, cwd=cwd)
        if proc.error:
            return StepResult.from_process(proc, argv[0], command=shlex.join(argv))
        plan = ReportPlan(ctx.resolve(None), cwd, config.reports, preset.reports, junit,
                          config.coverage)
        outcome = await asyncio.to_thread(read_outcome, plan)
        await ctx.log_skipped("report", outcome.outside)
        return _verdict(config, argv, proc, outcome)

    def _argv(self, ctx: StepContext[TestConfig], preset: Preset, junit: tuple[Path, ...]
              ) -> list[str]:
        config = ctx.config
        if config.command is not None:
            return [*BASH, config.command, ctx.step_name, *config.args]
        flags = [f"--junitxml={path}" for path in junit]
        return [*preset.argv, *flags, *config.args]


def _failed_tests_text(summary: TestSummary) -> str:
    names = [t.name for t in summary.failed_tests[:NAMES_IN_MESSAGE]]
    more = ", ..." if len(summary.failed_tests) > NAMES_IN_MESSAGE else ""
    count = summary.failed + summary.errors
    noun = "test" if summary.total == 1 else "tests"
    return f"{count} of {summary.total} {noun} failed ({', '.join(names)}{more})"


def _percent(value: float) -> str:
    # round down, so 79.96 is never shown as a passing-looking "80.0"
    return f"{math.floor(value * 10) / 10:.1f}"


def _reasons(config: TestConfig, argv: list[str], proc: ProcessResult, outcome: Outcome
             ) -> list[str]:
    reasons: list[str] = []
    summary = outcome.summary
    if summary is not None and (summary.failed or summary.errors):
        reasons.append(_failed_tests_text(summary))
    if proc.exit_code != 0:
        what = "bash command" if config.command is not None else argv[0]
        reasons.append(f"{what} exited with code {proc.exit_code}")
    reasons += [f"no file matches {pattern!r}" for pattern in outcome.unmatched]
    coverage = outcome.coverage
    if config.coverage_min is not None and coverage is not None \
            and coverage.percent < config.coverage_min:
        reasons.append(f"coverage {_percent(coverage.percent)}% is below the minimum "
                       f"{config.coverage_min:g}%")
    return reasons


def _verdict(config: TestConfig, argv: list[str], proc: ProcessResult, outcome: Outcome
             ) -> StepResult:
    counts = outcome.summary.to_dict() if outcome.summary is not None else {
        "total": None, "passed": None, "failed": None, "skipped": None, "errors": None,
        "failed_tests": [], "failed_tests_omitted": 0}
    result = {"duration_seconds": round(proc.duration, 3), "command": shlex.join(argv),
              **counts, "reports": outcome.files}
    if config.coverage is not None:
        result["coverage"] = outcome.coverage.to_dict() if outcome.coverage else None
    if outcome.error is not None:
        return with_exit_code(StepResult.failed(
            outcome.error, exit_code=proc.exit_code, code="invalid_report", retryable=False,
            **result))
    if reasons := _reasons(config, argv, proc, outcome):
        return with_exit_code(StepResult.failed("; ".join(reasons), exit_code=proc.exit_code,
                                                **result))
    return with_exit_code(StepResult.succeeded(exit_code=proc.exit_code, **result))
