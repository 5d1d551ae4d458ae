"""The scanners of ``security_scan``: how each is invoked and how its report is read.

Every external tool writes a JSON or SARIF report to a file; its exit code alone never
decides anything, because bandit and pip-audit exit 1 when they find something. A
scanner *failed* only when it could not start, wrote no report, or wrote one that does
not parse; otherwise its report's findings count, whatever the exit code.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ansflow.steps.base import StepConfig, StepContext
from ansflow.steps.files import OUTSIDE, glob_files, inside
from ansflow.steps.security_scan.findings import Finding, PathFilter
from ansflow.steps.security_scan.sarif import (
    Report,
    ReportError,
    load_json,
    parse_bandit,
    parse_pip_audit,
    parse_sarif,
    requirement_lines,
)
from ansflow.steps.security_scan.secret_scanner import SKIP_DIRS, mask_secrets, scan_tree

BUILTIN_SCANNERS = ("secrets", "bandit", "pip-audit", "semgrep", "trivy")
BASH = ["bash", "-eo", "pipefail", "-c"]
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_.+-]+")
# bash builtins and keywords (``compgen -bk``): not tools, nothing to look up on PATH
_SHELL_WORDS = frozenset({
    ".", ":", "[", "alias", "bg", "bind", "break", "builtin", "caller", "cd", "command",
    "compgen", "complete", "compopt", "continue", "declare", "dirs", "disown", "echo", "enable",
    "eval", "exec", "exit", "export", "false", "fc", "fg", "getopts", "hash", "help", "history",
    "jobs", "kill", "let", "local", "logout", "mapfile", "popd", "printf", "pushd", "pwd", "read",
    "readarray", "readonly", "return", "set", "shift", "shopt", "source", "suspend", "test",
    "times", "trap", "true", "type", "typeset", "ulimit", "umask", "unalias", "unset", "wait",
    "if", "then", "else", "elif", "fi", "case", "esac", "for", "select", "while", "until", "do",
    "done", "in", "function", "time", "{", "}", "!", "[[", "]]", "coproc", "(",
})


def relative_setting(value: str, what: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{what} {value!r} must be relative and stay inside the working "
                         "directory")
    return value


class ScannerConfig(StepConfig):
    """One entry of ``scanners``: a built-in scanner by name (``args`` are added to its
    command line), or any ``command`` (a bash command line) that writes the SARIF file
    ``sarif`` (relative to ``working_dir``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    command: str | None = None
    sarif: str | None = None
    args: list[str] = Field(default_factory=list)

    @field_validator("sarif")
    @classmethod
    def _sarif_inside(cls, value: str | None) -> str | None:
        return None if value is None else relative_setting(value, "sarif")

    @model_validator(mode="after")
    def _consistent(self) -> ScannerConfig:
        if self.command is None:
            if self.name not in BUILTIN_SCANNERS:
                raise ValueError(f"unknown scanner {self.name!r}: use one of "
                                 f"{', '.join(BUILTIN_SCANNERS)}, or give 'command' and 'sarif'")
            if self.sarif is not None:
                raise ValueError(f"scanner {self.name!r}: 'sarif' needs 'command'")
            if self.name == "secrets" and self.args:
                raise ValueError("scanner 'secrets' takes no 'args'")
        else:
            if self.sarif is None:
                raise ValueError(f"scanner {self.name!r}: 'command' needs 'sarif', the SARIF "
                                 "file the command writes")
            if self.args:
                raise ValueError(f"scanner {self.name!r}: put arguments into 'command'")
        return self


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """Where one step scans: ``targets`` (absolute) are ``target_args`` relative to ``cwd``."""

    cwd: Path
    targets: list[Path]
    target_args: list[str]
    exclude: PathFilter
    report_dir: Path
    masks: tuple[str, ...] = ()
    """The step's secret values, cut out of every message and excerpt."""
    skipped: list[str] = field(default_factory=list)
    """Files a planner left out because they lead out of the working directory."""


@dataclass(frozen=True, slots=True)
class Invocation:
    argv: list[str]
    report: Path
    read: Callable[[Path], Report]
    """Parses the report file; blocking, called through ``asyncio.to_thread``."""


@dataclass(slots=True)
class ScanOutcome:
    name: str
    status: Literal["ok", "failed", "skipped"] = "ok"
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    exit_codes: list[int] = field(default_factory=list)
    duration: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"status": self.status, "findings": len(self.findings),
                                  "duration_seconds": round(self.duration, 3), **self.extra}
        if self.exit_codes:
            status["exit_codes"] = self.exit_codes
        if self.error:
            status["error"] = self.error
        if self.problems:
            status["problems"] = self.problems[:20]
        return status


def required_tool(spec: ScannerConfig) -> str | None:
    """The executable a scanner needs on PATH (``None``: nothing to check up front)."""
    if spec.command is None:
        return None if spec.name == "secrets" else spec.name
    try:
        words = shlex.split(spec.command)
    except ValueError:
        return "bash"
    first = words[0] if words else ""
    if "=" in first or first in _SHELL_WORDS or not _PLAIN_WORD.fullmatch(first):
        return "bash"
    return first


# --- invocations -------------------------------------------------------------------


def _bandit(spec: ScannerConfig, plan: ScanPlan, report: Path) -> list[Invocation]:
    skipped = ",".join([*(f"*/{d}/*" for d in sorted(SKIP_DIRS)), "*/.tox/*", "*/.eggs/*"])
    argv = ["bandit", "-r", "-q", "-f", "json", "-o", str(report), "-x", skipped, *spec.args,
            *plan.target_args]
    return [Invocation(argv, report, lambda p: parse_bandit(load_json(p), plan.cwd, spec.name))]


def _semgrep(spec: ScannerConfig, plan: ScanPlan, report: Path) -> list[Invocation]:
    has_config = any(a in ("-c", "--config") or a.startswith("--config=") for a in spec.args)
    argv = ["semgrep", "scan", "--sarif", "--output", str(report), "--quiet",
            *([] if has_config else ["--config", "auto"]), *spec.args, *plan.target_args]
    return [Invocation(argv, report,
                       lambda p: parse_sarif(load_json(p), spec.name, plan.cwd))]


def _trivy(spec: ScannerConfig, plan: ScanPlan, report: Path) -> list[Invocation]:
    # trivy fs takes one target: one run (and one report) per path
    invocations = []
    for i, target in enumerate(plan.target_args):
        out = report.with_name(f"{report.stem}-{i}.sarif")
        argv = ["trivy", "fs", "--quiet", "--format", "sarif", "--output", str(out),
                *spec.args, target]
        invocations.append(Invocation(
            argv, out, lambda p: parse_sarif(load_json(p), spec.name, plan.cwd)))
    return invocations


def _pip_audit_sources(target: Path, plan: ScanPlan) -> list[Path]:
    if target.is_file():
        return [target]
    matches = glob_files(target, ["requirements*.txt"], plan.cwd)
    plan.skipped.extend(f"{label}: {OUTSIDE}" for label in matches.labels(plan.cwd))
    found = matches.files
    if not found and (target / "pyproject.toml").is_file():
        found = [target / "pyproject.toml"]
    return [path for path in found if inside(path, plan.cwd)]


def _pip_audit(spec: ScannerConfig, plan: ScanPlan, report: Path) -> list[Invocation]:
    invocations = []
    sources = [s for target in plan.targets for s in _pip_audit_sources(target, plan)]
    for i, source in enumerate(sources):
        out = report.with_name(f"{report.stem}-{i}.json")
        relative = str(source.relative_to(plan.cwd)) if plan.cwd in source.parents else str(source)
        what = ([str(source.parent)] if source.name == "pyproject.toml"
                else ["-r", str(source)])
        argv = ["pip-audit", "-f", "json", "-o", str(out), "--progress-spinner", "off",
                *spec.args, *what]

        def read(path: Path, source: Path = source, relative: str = relative) -> Report:
            lines = (requirement_lines(source.read_text(encoding="utf-8", errors="replace"))
                     if source.suffix == ".txt" else None)
            return parse_pip_audit(load_json(path), relative, lines, spec.name)

        invocations.append(Invocation(argv, out, read))
    return invocations


def _command(spec: ScannerConfig, plan: ScanPlan, report: Path) -> list[Invocation]:
    assert spec.command is not None and spec.sarif is not None
    out = plan.cwd / spec.sarif
    return [Invocation([*BASH, spec.command], out,
                       lambda p: parse_sarif(load_json(p), spec.name, plan.cwd))]


PLANNERS: dict[str, Callable[[ScannerConfig, ScanPlan, Path], list[Invocation]]] = {
    "bandit": _bandit, "semgrep": _semgrep, "trivy": _trivy, "pip-audit": _pip_audit,
}
REPORT_SUFFIX = {"bandit": ".json", "pip-audit": ".json"}


# --- running -----------------------------------------------------------------------


def _clean(finding: Finding, masks: tuple[str, ...]) -> Finding:
    def scrub(text: str | None) -> str | None:
        if text is None:
            return None
        text = mask_secrets(text)
        for secret in masks:
            text = text.replace(secret, "****")
        return text

    return replace(finding, message=scrub(finding.message) or "", excerpt=scrub(finding.excerpt))


async def _invoke(ctx: StepContext[Any], invocation: Invocation, plan: ScanPlan,
                  outcome: ScanOutcome) -> None:
    await asyncio.to_thread(invocation.report.unlink, missing_ok=True)
    proc = await ctx.run(invocation.argv, cwd=plan.cwd)
    outcome.duration += proc.duration
    if proc.error:
        outcome.status, outcome.error = "failed", proc.error
        return
    outcome.exit_codes.append(proc.exit_code)
    if plan.cwd in invocation.report.parents and not await asyncio.to_thread(
            inside, invocation.report, plan.cwd):
        outcome.status = "failed"
        outcome.error = f"the report {invocation.report.name!r} is {OUTSIDE}"
        return
    try:
        report = await asyncio.to_thread(invocation.read, invocation.report)
    except ReportError as exc:
        outcome.status = "failed"
        outcome.error = f"exited with code {proc.exit_code} and {exc}"
        return
    outcome.problems.extend(mask_secrets(p) for p in report.problems)
    outcome.findings.extend(
        _clean(f, plan.masks) for f in report.findings
        if f.file is None or not plan.exclude.excluded(f.file))


async def _secrets(plan: ScanPlan, outcome: ScanOutcome) -> None:
    scan = await asyncio.to_thread(scan_tree, plan.cwd, plan.targets, plan.exclude)
    outcome.findings = [_clean(f, plan.masks) for f in scan.findings]
    outcome.problems = scan.unreadable
    outcome.extra = {"files_scanned": scan.files, "skipped_binary": scan.skipped_binary,
                     "skipped_large": scan.skipped_large}


async def run_scanner(ctx: StepContext[Any], spec: ScannerConfig, plan: ScanPlan,
                      index: int) -> ScanOutcome:
    """Run one scanner to completion; never raises for the scanner's own failures."""
    outcome = ScanOutcome(spec.name)
    if spec.command is None and spec.name == "secrets":
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _secrets(plan, outcome)
        outcome.duration = loop.time() - started
        return outcome
    planner = _command if spec.command is not None else PLANNERS[spec.name]
    suffix = ".sarif" if spec.command is not None else REPORT_SUFFIX.get(spec.name, ".sarif")
    report = plan.report_dir / f"{index}-{spec.name}{suffix}"
    invocations = await asyncio.to_thread(planner, spec, plan, report)
    outcome.problems.extend(plan.skipped)
    plan.skipped.clear()
    if not invocations:
        outcome.status = "skipped"
        outcome.error = "nothing to audit: no requirements*.txt or pyproject.toml in " + \
            ", ".join(repr(t) for t in plan.target_args)
    for invocation in invocations:
        await _invoke(ctx, invocation, plan, outcome)
        if outcome.status == "failed":
            break
    return outcome


def step_masks(secrets: Mapping[str, str]) -> tuple[str, ...]:
    # as the log masker does, very short values are left alone: masking them garbles text
    return tuple(sorted((v for v in secrets.values() if len(v) > 3), key=len, reverse=True))
