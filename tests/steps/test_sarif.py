from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ansflow.steps.security_scan.findings import from_cvss, threshold_message
from ansflow.steps.security_scan.sarif import (
    ReportError,
    load_json,
    parse_bandit,
    parse_pip_audit,
    parse_sarif,
    requirement_lines,
)

REPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "scan_reports"
ROOT = Path("/srv/ws")


def sarif(results: list[dict[str, Any]], rules: list[dict[str, Any]] | None = None,
          **run: Any) -> dict[str, Any]:
    return {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "t", "rules": rules or []}},
                                          "results": results, **run}]}


@pytest.mark.parametrize(("score", "severity"), [
    (10.0, "critical"), (9.0, "critical"), (8.9, "high"), (7.0, "high"), (6.9, "medium"),
    (4.0, "medium"), (3.9, "low"), (0.0, "low"),
])
def test_cvss(score: float, severity: str) -> None:
    assert from_cvss(score) == severity


@pytest.mark.parametrize(("result", "rule", "severity"), [
    ({"level": "error"}, {}, "high"),
    ({"level": "warning"}, {}, "medium"),
    ({"level": "note"}, {}, "low"),
    ({"level": "none"}, {}, "low"),
    ({}, {}, "medium"),
    ({}, {"defaultConfiguration": {"level": "error"}}, "high"),
    ({"level": "note"}, {"properties": {"security-severity": "9.1"}}, "critical"),
    ({"level": "error"}, {"properties": {"security-severity": "3.0"}}, "low"),
    ({"properties": {"security-severity": 7}}, {}, "high"),
    ({"level": "error"}, {"properties": {"security-severity": "n/a"}}, "high"),
])
def test_sarif_severity(result: dict[str, Any], rule: dict[str, Any], severity: str) -> None:
    doc = sarif([{"ruleId": "R", "ruleIndex": 0, "message": {"text": "m"}, **result}],
                [{"id": "R", **rule}])
    [finding] = parse_sarif(doc, "x", ROOT).findings
    assert finding.severity == severity


def loc(uri: str, **extra: str) -> list[dict[str, Any]]:
    return [{"physicalLocation": {"artifactLocation": {"uri": uri, **extra},
                                  "region": {"startLine": 4}}}]


def test_sarif_locations_and_messages() -> None:
    doc = sarif([
        {"ruleId": "A", "message": {"text": ""}, "locations": loc("src/a%20b.py")},
        {"ruleId": "B", "message": {"text": "b"}, "locations": loc("file:///srv/ws/lib/b.py")},
        {"ruleId": "C", "message": {"text": "c"}, "locations": loc("c.py", uriBaseId="SRC")},
        {"ruleId": "D", "message": {"text": "d"}, "locations": loc("file:///etc/passwd")},
        {"ruleId": "E", "message": {"text": "e"}},
    ], [{"id": "A", "shortDescription": {"text": "rule A says"}}],
        originalUriBaseIds={"SRC": {"uri": "file:///srv/ws/pkg/"}})
    found = [(f.rule, f.file, f.line, f.message) for f in parse_sarif(doc, "x", ROOT).findings]
    assert found == [
        ("A", "src/a b.py", 4, "rule A says"),
        ("B", "lib/b.py", 4, "b"),
        ("C", "pkg/c.py", 4, "c"),
        ("D", "/etc/passwd", 4, "d"),
        ("E", None, None, "e"),
    ]


def test_sarif_tool_errors_become_problems() -> None:
    doc = sarif([], invocations=[{"executionSuccessful": False, "toolExecutionNotifications": [
        {"level": "error", "message": {"text": "could not parse x.py"}},
        {"level": "warning", "message": {"text": "slow"}}]}])
    report = parse_sarif(doc, "x", ROOT)
    assert report.findings == []
    assert report.problems == ["could not parse x.py"]


@pytest.mark.parametrize("doc", [[], {"runs": {}}, {"version": "2.1.0"}, "x"])
def test_not_sarif(doc: Any) -> None:
    with pytest.raises(ReportError, match="not a SARIF log"):
        parse_sarif(doc, "x", ROOT)


def test_load_json_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"no report was written to r\.json"):
        load_json(tmp_path / "r.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ReportError, match=r"report bad\.json is not valid JSON"):
        load_json(tmp_path / "bad.json")


def test_bandit_report() -> None:
    doc = {"errors": [{"filename": "./broken.py", "reason": "syntax error while parsing AST"}],
           "results": [{"filename": "./app/x.py", "line_number": 8, "issue_severity": "HIGH",
                        "issue_confidence": "HIGH", "test_id": "B602",
                        "test_name": "subprocess_popen_with_shell_equals_true",
                        "issue_text": "subprocess call with shell=True identified",
                        "code": "7 def f(c):\n8     subprocess.call(c, shell=True)\n9 \n"},
                       {"filename": "/srv/ws/y.py", "line_number": 2,
                        "issue_severity": "UNDEFINED", "test_id": "B000", "code": None}]}
    report = parse_bandit(doc, ROOT)
    first, second = report.findings
    assert (first.rule, first.severity, first.file, first.line) == ("B602", "high", "app/x.py", 8)
    assert first.message == ("subprocess_popen_with_shell_equals_true: subprocess call with "
                             "shell=True identified")
    assert first.excerpt == "subprocess.call(c, shell=True)"
    assert (second.severity, second.file, second.excerpt) == ("low", "y.py", None)
    assert report.problems == ["./broken.py: syntax error while parsing AST"]
    with pytest.raises(ReportError, match="not a bandit JSON report"):
        parse_bandit({"errors": []}, ROOT)


def test_pip_audit_sample_report() -> None:
    doc = json.loads((REPORTS / "pip_audit.json").read_text())
    lines = requirement_lines("Flask==0.5\n# yaml\nPyYAML==5.3\n--index-url x\n")
    report = parse_pip_audit(doc, "requirements.txt", lines)
    assert [(f.rule, f.severity, f.file, f.line, f.excerpt) for f in report.findings] == [
        ("PYSEC-2019-179", "high", "requirements.txt", 1, "flask==0.5"),
        ("PYSEC-2018-66", "high", "requirements.txt", 1, "flask==0.5"),
        ("PYSEC-2021-142", "high", "requirements.txt", 3, "pyyaml==5.3"),
    ]
    assert report.findings[0].message == (
        "flask 0.5 has a known vulnerability PYSEC-2019-179 (CVE-2019-1010083); fixed in 1.0")
    assert report.findings[2].message == (
        "pyyaml 5.3 has a known vulnerability PYSEC-2021-142; no fixed version yet")
    assert len(report.problems) == 1
    legacy = doc["dependencies"]
    assert len(parse_pip_audit(legacy, None).findings) == 3
    with pytest.raises(ReportError, match="not a pip-audit JSON report"):
        parse_pip_audit({"deps": []}, None)


def test_requirement_lines() -> None:
    text = "# c\nZope.Interface>=5\n  requests[socks] ==2.0\n-r other.txt\nrequests\n"
    assert requirement_lines(text) == {"zope-interface": 2, "requests": 3}


@pytest.mark.parametrize(("counts", "fail_on", "message"), [
    ({"critical": 1, "high": 2, "medium": 0, "low": 5}, "high",
     "3 findings at or above 'high' (critical: 1, high: 2)"),
    ({"critical": 0, "high": 1, "medium": 0, "low": 0}, "high",
     "1 finding at or above 'high' (high: 1)"),
    ({"critical": 0, "high": 0, "medium": 4, "low": 0}, "high", None),
    ({"critical": 9, "high": 0, "medium": 0, "low": 0}, "none", None),
])
def test_threshold_message(counts: dict[str, int], fail_on: str, message: str | None) -> None:
    assert threshold_message(counts, fail_on) == message
