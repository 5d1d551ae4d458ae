"""Reading scanner reports into ``Finding``s: SARIF 2.1.0, bandit JSON and pip-audit JSON.

Parsers are pure functions of the decoded document; ``load_json`` reads the file (a
blocking call, made through ``asyncio.to_thread`` by the step). A document that is not
in the expected shape raises ``ReportError``, which the step reports as a crashed
scanner, never as "no findings".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ansflow.steps.security_scan.findings import (
    EXCERPT_CHARS,
    MESSAGE_CHARS,
    SARIF_LEVELS,
    Finding,
    Severity,
    clip,
    from_cvss,
    relative_path,
)

BANDIT_SEVERITIES: dict[str, Severity] = {"HIGH": "high", "MEDIUM": "medium", "LOW": "low"}
PIP_AUDIT_SEVERITY: Severity = "high"
"""pip-audit's JSON carries no severity; a known vulnerability in a dependency counts as high."""


class ReportError(Exception):
    """A scanner's report is missing or is not the document it should be."""


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Things the tool said it could not do (a file it could not parse, a skipped package)."""


def load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError as exc:
        raise ReportError(f"no report was written to {path.name}") from exc
    except OSError as exc:
        raise ReportError(f"cannot read report {path.name}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"report {path.name} is not valid JSON ({exc.msg} at line "
                          f"{exc.lineno})") from exc


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- SARIF -------------------------------------------------------------------------


def parse_sarif(doc: Any, scanner: str, root: Path) -> Report:
    """Findings of every run's results; ``kind`` other than ``fail`` and suppressed
    results are not findings. File paths become relative to ``root``."""
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise ReportError("not a SARIF log: it has no 'runs' list")
    report = Report()
    for run in doc["runs"]:
        run = _dict(run)
        bases = _base_paths(run)
        for invocation in _list(run.get("invocations")):
            report.problems.extend(_notifications(_dict(invocation)))
        for result in _list(run.get("results")):
            result = _dict(result)
            if result.get("kind", "fail") != "fail" or _suppressed(result):
                continue
            report.findings.append(_sarif_finding(result, run, bases, scanner, root))
    return report


def _notifications(invocation: dict[str, Any]) -> list[str]:
    return [clip(str(_dict(note.get("message")).get("text", "")), MESSAGE_CHARS)
            for note in map(_dict, _list(invocation.get("toolExecutionNotifications")))
            if note.get("level") == "error"]


def _suppressed(result: dict[str, Any]) -> bool:
    return any(_dict(s).get("status", "accepted") == "accepted"
               for s in _list(result.get("suppressions")))


def _base_paths(run: dict[str, Any]) -> dict[str, str]:
    bases: dict[str, str] = {}
    for name, location in _dict(run.get("originalUriBaseIds")).items():
        uri = _dict(location).get("uri")
        if isinstance(uri, str) and (parts := urlsplit(uri)).scheme == "file":
            bases[name] = unquote(parts.path)
    return bases


def _rule(result: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    tool = _dict(run.get("tool"))
    ref = _dict(result.get("rule"))
    component = _dict(tool.get("driver"))
    extension = _int(_dict(ref.get("toolComponent")).get("index"))
    extensions = _list(tool.get("extensions"))
    if extension is not None and 0 <= extension < len(extensions):
        component = _dict(extensions[extension])
    rules = _list(component.get("rules"))
    index = _int(result.get("ruleIndex", ref.get("index")))
    if index is not None and 0 <= index < len(rules):
        return _dict(rules[index])
    rule_id = result.get("ruleId", ref.get("id"))
    return next((r for r in map(_dict, rules) if r.get("id") == rule_id), {})


def _sarif_severity(result: dict[str, Any], rule: dict[str, Any]) -> Severity:
    for props in (_dict(result.get("properties")), _dict(rule.get("properties"))):
        score = props.get("security-severity")
        if not isinstance(score, (int, float, str)) or isinstance(score, bool):
            continue
        try:
            return from_cvss(float(score))
        except (TypeError, ValueError):
            continue
    level = result.get("level") or _dict(rule.get("defaultConfiguration")).get("level")
    return SARIF_LEVELS.get(str(level or "warning"), "medium")


def _sarif_message(result: dict[str, Any], rule: dict[str, Any], rule_id: str) -> str:
    text = _dict(result.get("message")).get("text")
    for fallback in ("shortDescription", "fullDescription"):
        if isinstance(text, str) and text.strip():
            break
        text = _dict(rule.get(fallback)).get("text")
    return clip(text if isinstance(text, str) and text.strip() else rule_id, MESSAGE_CHARS)


def _artifact_path(artifact: dict[str, Any], bases: Mapping[str, str], root: Path) -> str | None:
    uri = artifact.get("uri")
    if not isinstance(uri, str) or not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = unquote(parts.path)
    elif parts.scheme and len(parts.scheme) > 1:
        return uri
    else:
        path = unquote(uri)
        base = bases.get(str(artifact.get("uriBaseId")))
        if base and not os.path.isabs(path):
            path = os.path.join(base, path)
    return relative_path(path, str(root))


def _sarif_finding(result: dict[str, Any], run: dict[str, Any], bases: Mapping[str, str],
                   scanner: str, root: Path) -> Finding:
    rule = _rule(result, run)
    rule_id = str(result.get("ruleId") or _dict(result.get("rule")).get("id")
                  or rule.get("id") or "unknown")
    location = _dict(next(iter(_list(result.get("locations"))), None))
    physical = _dict(location.get("physicalLocation"))
    region = _dict(physical.get("region"))
    snippet = _dict(region.get("snippet")).get("text")
    excerpt = clip(snippet.split("\n")[0], EXCERPT_CHARS) if isinstance(snippet, str) else None
    return Finding(scanner, rule_id, _sarif_severity(result, rule),
                   _artifact_path(_dict(physical.get("artifactLocation")), bases, root),
                   _int(region.get("startLine")), _sarif_message(result, rule, rule_id),
                   excerpt or None)


# --- bandit ------------------------------------------------------------------------


def _bandit_excerpt(code: Any, line: int | None) -> str | None:
    if not isinstance(code, str):
        return None
    numbered = [row.partition(" ") for row in code.split("\n") if row.strip()]
    for number, _, text in numbered:
        if number == str(line):
            return clip(text, EXCERPT_CHARS) or None
    if not numbered:
        return None
    return clip(numbered[0][2], EXCERPT_CHARS) or None


def parse_bandit(doc: Any, root: Path, scanner: str = "bandit") -> Report:
    """bandit ``-f json``: ``results`` become findings, ``errors`` become problems."""
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise ReportError("not a bandit JSON report: it has no 'results' list")
    report = Report()
    for error in map(_dict, _list(doc.get("errors"))):
        report.problems.append(f"{error.get('filename')}: {error.get('reason')}")
    for item in map(_dict, doc["results"]):
        line = _int(item.get("line_number"))
        filename = item.get("filename")
        rule = str(item.get("test_id") or "unknown")
        name = item.get("test_name")
        message = str(item.get("issue_text") or name or rule)
        report.findings.append(Finding(
            scanner, rule, BANDIT_SEVERITIES.get(str(item.get("issue_severity")).upper(), "low"),
            relative_path(filename, str(root)) if isinstance(filename, str) else None, line,
            clip(f"{name}: {message}" if name else message, MESSAGE_CHARS),
            _bandit_excerpt(item.get("code"), line)))
    return report


# --- pip-audit ---------------------------------------------------------------------

_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical_name(name: str) -> str:
    """PEP 503 normalisation, as pip-audit reports names."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(text: str) -> dict[str, int]:
    """Where each requirement of a requirements file is named (first occurrence)."""
    lines: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        match = _REQUIREMENT_NAME.match(line)
        if match and not line.lstrip().startswith("#"):
            lines.setdefault(canonical_name(match.group(1)), number)
    return lines


def _pip_audit_message(name: str, version: str, vuln: dict[str, Any]) -> str:
    aliases = [str(a) for a in _list(vuln.get("aliases"))]
    fixes = [str(v) for v in _list(vuln.get("fix_versions"))]
    also = f" ({', '.join(aliases)})" if aliases else ""
    fixed = f"fixed in {', '.join(fixes)}" if fixes else "no fixed version yet"
    return clip(f"{name} {version} has a known vulnerability {vuln.get('id')}{also}; {fixed}",
                MESSAGE_CHARS)


def parse_pip_audit(doc: Any, source: str | None, lines: Mapping[str, int] | None = None,
                    scanner: str = "pip-audit") -> Report:
    """pip-audit ``-f json`` (``{"dependencies": [...]}``, or the bare list older versions
    wrote). ``source`` is the audited file reported as each finding's ``file``, ``lines``
    (from ``requirement_lines``) where each package is named in it."""
    deps = doc.get("dependencies") if isinstance(doc, dict) else doc
    if not isinstance(deps, list):
        raise ReportError("not a pip-audit JSON report: it has no 'dependencies' list")
    report = Report()
    for dep in map(_dict, deps):
        name = str(dep.get("name") or "?")
        if dep.get("skip_reason"):
            report.problems.append(f"{name}: {dep['skip_reason']}")
            continue
        version = str(dep.get("version") or "?")
        for vuln in map(_dict, _list(dep.get("vulns"))):
            report.findings.append(Finding(
                scanner, str(vuln.get("id") or "unknown"), PIP_AUDIT_SEVERITY, source,
                (lines or {}).get(canonical_name(name)), _pip_audit_message(name, version, vuln),
                f"{name}=={version}"))
    return report
