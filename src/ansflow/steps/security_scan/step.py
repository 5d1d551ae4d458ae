"""``security_scan``: scan the workspace with one or more scanners and judge the findings.

``scanners`` lists built-in scanners by name (``secrets`` needs no tool; ``bandit``,
``pip-audit``, ``semgrep`` and ``trivy`` must be installed on the worker) or
``{name, command, sarif}`` for any command that writes SARIF. Scanners run one after
the other in ``working_dir`` over ``paths``; findings in files matching ``exclude`` are
dropped. The step fails when a scanner could not do its job, or when any finding is at
or above ``fail_on`` (``none``: findings never fail the step).

The result holds ``findings`` (the most severe first, at most ``MAX_FINDINGS``, with
``truncated`` counting the rest), ``counts`` by severity over all findings, and
``scanners``: each scanner's status. Secrets are masked in excerpts, messages and the log.

Substitution (``spec/substitution.py``): ``${{ }}`` in a scanner's ``command`` reaches
bash as a quoted reference to a variable of the step's environment; scanner names cannot
hold an expression; a built-in scanner's ``args`` are tool arguments that a value cannot
turn into an option; ``sarif``, ``paths`` and ``working_dir`` are paths; ``exclude``
globs are plain data.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ansflow.spec.substitution import FieldKind
from ansflow.steps.base import StepConfig, StepContext, StepResult, StepType
from ansflow.steps.security_scan.findings import (
    Finding,
    PathFilter,
    count,
    describe_counts,
    threshold_message,
)
from ansflow.steps.security_scan.tools import (
    ScannerConfig,
    ScanOutcome,
    ScanPlan,
    relative_setting,
    required_tool,
    run_scanner,
    step_masks,
)

FailOn = Literal["critical", "high", "medium", "low", "none"]
MAX_FINDINGS = 1000
LOGGED_FINDINGS = 25
"""Findings written to the log per scanner; the result holds up to ``MAX_FINDINGS``."""


class SecurityScanConfig(StepConfig):
    scanners: list[ScannerConfig] = Field(
        default_factory=lambda: [ScannerConfig(name="secrets")], min_length=1)
    """Names (``secrets``, ``bandit``, ``pip-audit``, ``semgrep``, ``trivy``) or objects."""
    paths: list[str] = Field(default_factory=lambda: ["."], min_length=1)
    """What to scan, relative to ``working_dir``."""
    exclude: list[str] = Field(default_factory=list)
    """Globs relative to ``working_dir``; see ``findings.PathFilter``."""
    fail_on: FailOn = "high"
    working_dir: str | None = None

    @field_validator("scanners", mode="before")
    @classmethod
    def _names_to_objects(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("scanners")
    @classmethod
    def _unique(cls, value: list[ScannerConfig]) -> list[ScannerConfig]:
        names = [spec.name for spec in value]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"scanner names must be unique; repeated: {', '.join(dupes)}")
        return value

    @field_validator("paths")
    @classmethod
    def _inside(cls, value: list[str]) -> list[str]:
        return [relative_setting(path, "path") for path in value]


def _fail_config(message: str) -> StepResult:
    return StepResult.failed(message, code="invalid_config", retryable=False)


def _locate(ctx: StepContext[SecurityScanConfig]) -> tuple[Path, list[Path]] | StepResult:
    config = ctx.config
    try:
        cwd = ctx.resolve(config.working_dir)
    except ValueError as exc:
        return _fail_config(f"working_dir: {exc}")
    if not cwd.is_dir():
        return _fail_config(f"working_dir {config.working_dir!r} does not exist in the workspace")
    targets: list[Path] = []
    for path in config.paths:
        target = (cwd / path).resolve()
        if target != cwd and cwd not in target.parents:
            return _fail_config(f"paths: {path!r} leaves the working directory")
        if not target.exists():
            return _fail_config(f"paths: {path!r} does not exist in the working directory")
        targets.append(target)
    return cwd, targets


def _missing_tool(ctx: StepContext[SecurityScanConfig]) -> StepResult | None:
    for spec in ctx.config.scanners:
        tool = required_tool(spec)
        if tool is not None and ctx.which(tool) is None:
            return StepResult.failed(f"tool {tool!r} is not installed on this worker",
                                     code="tool_missing", retryable=False,
                                     scanner=spec.name)
    return None


def _exclusions(config: SecurityScanConfig) -> PathFilter:
    # the SARIF files that commands write into the workspace are reports, not sources
    written = [spec.sarif for spec in config.scanners if spec.sarif is not None]
    return PathFilter([*config.exclude, *written])


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _where(finding: Finding) -> str:
    if finding.file is None:
        return "-"
    return finding.file if finding.line is None else f"{finding.file}:{finding.line}"


async def _log_outcome(ctx: StepContext[Any], outcome: ScanOutcome) -> None:
    if outcome.status == "failed":
        await ctx.log(f"{outcome.name}: failed: {outcome.error}")
    elif outcome.status == "skipped":
        await ctx.log(f"{outcome.name}: skipped: {outcome.error}")
    else:
        counts = describe_counts(count(outcome.findings))
        files = outcome.extra.get("files_scanned")
        scanned = f" in {files} files" if files is not None else ""
        await ctx.log(f"{outcome.name}: {_plural(len(outcome.findings), 'finding')}{scanned}"
                      + (f" ({counts})" if counts else ""))
    for problem in outcome.problems[:5]:
        await ctx.log(f"{outcome.name}: warning: {problem}")
    for finding in sorted(outcome.findings, key=Finding.sort_key)[:LOGGED_FINDINGS]:
        await ctx.log(f"  [{finding.severity}] {_where(finding)} {finding.rule}: "
                      f"{finding.message}")
    if len(outcome.findings) > LOGGED_FINDINGS:
        await ctx.log(f"  ... and {len(outcome.findings) - LOGGED_FINDINGS} more "
                      "(see the step result)")


def _result(outcomes: list[ScanOutcome], fail_on: str) -> StepResult:
    findings = sorted((f for o in outcomes for f in o.findings), key=Finding.sort_key)
    counts = count(findings)
    result: dict[str, Any] = {
        "findings": [f.to_dict() for f in findings[:MAX_FINDINGS]],
        "counts": counts,
        "total": len(findings),
        "truncated": max(0, len(findings) - MAX_FINDINGS),
        "scanners": {o.name: o.to_status() for o in outcomes},
        "fail_on": fail_on,
    }
    crashed = [f"scanner {o.name!r} failed: {o.error}" for o in outcomes if o.status == "failed"]
    over = threshold_message(counts, fail_on)
    if crashed:
        return StepResult.failed("; ".join([*crashed, *([over] if over else [])]),
                                 code="scanner_failed", **result)
    if over:
        return StepResult.failed(over, code="findings", retryable=False, **result)
    return StepResult.succeeded(**result)


class SecurityScanStep(StepType[SecurityScanConfig]):
    name = "security_scan"
    config_model = SecurityScanConfig
    substitution: ClassVar[Mapping[str, FieldKind]] = {
        "scanners[]": FieldKind.FIXED,
        "scanners[].name": FieldKind.FIXED,
        "scanners[].command": FieldKind.BASH,
        "scanners[].args[]": FieldKind.ARGUMENT,
        "scanners[].sarif": FieldKind.PATH,
        "paths[]": FieldKind.PATH,
        "working_dir": FieldKind.PATH,
    }

    async def run(self, ctx: StepContext[SecurityScanConfig]) -> StepResult:
        config = ctx.config
        located = _locate(ctx)
        if isinstance(located, StepResult):
            return located
        if (missing := _missing_tool(ctx)) is not None:
            return missing
        cwd, targets = located
        report_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="ansflow-scan-",
                                                  dir=ctx.temp_dir))
        plan = ScanPlan(cwd, targets, [str(t.relative_to(cwd)) if t != cwd else "."
                                       for t in targets],
                        _exclusions(config), report_dir, step_masks(ctx.secrets))
        outcomes: list[ScanOutcome] = []
        try:
            for index, spec in enumerate(config.scanners):
                outcome = await run_scanner(ctx, spec, plan, index)
                await _log_outcome(ctx, outcome)
                outcomes.append(outcome)
        finally:
            await asyncio.to_thread(shutil.rmtree, report_dir, True)
        result = _result(outcomes, config.fail_on)
        await ctx.log(f"security scan: {_plural(result.result['total'], 'finding')}"
                      + (f"; {result.error}" if result.error else "; passed"))
        return result
