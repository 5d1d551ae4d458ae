from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ansflow.errors import DefinitionError
from ansflow.steps.base import get_step_type
from tests.steps.conftest import RunStep
from tests.steps.scan_helpers import (
    EXPECTED_SECRETS,
    assert_no_secret,
    path_env,
    project,
    stub,
    triples,
)

__all__ = ["project"]


async def test_secrets_scanner_finds_exactly_the_planted_secrets(
        run_step: RunStep, project: Path) -> None:
    run = await run_step("security_scan", {"scanners": ["secrets"]})
    result = run.result.result
    assert triples(result, "secrets") == EXPECTED_SECRETS
    assert result["counts"] == {"critical": 3, "high": 3, "medium": 1, "low": 0}
    assert result["scanners"]["secrets"]["status"] == "ok"
    assert result["scanners"]["secrets"]["skipped_binary"] == 1
    assert not run.result.success
    assert run.result.error == "6 findings at or above 'high' (critical: 3, high: 3)"
    assert run.result.error_code == "findings"
    assert run.result.retryable is False
    excerpts = {f["rule"]: f["excerpt"] for f in result["findings"]}
    assert excerpts["aws_access_key_id"] == 'AWS_ACCESS_KEY_ID = "AKIA****"'
    assert excerpts["slack_webhook"] == "SLACK_WEBHOOK_URL=http****"
    assert excerpts["private_key"] == "-----BEGIN RSA PRIVATE KEY-----"
    assert_no_secret(json.dumps(result))
    assert_no_secret(run.log.text)
    assert "secrets: 7 findings in 7 files (critical: 3, high: 3, medium: 1)" in run.log.lines


@pytest.mark.parametrize(("fail_on", "success", "message"), [
    ("critical", False, "3 findings at or above 'critical' (critical: 3)"),
    ("high", False, "6 findings at or above 'high' (critical: 3, high: 3)"),
    ("medium", False, "7 findings at or above 'medium' (critical: 3, high: 3, medium: 1)"),
    ("low", False, "7 findings at or above 'low' (critical: 3, high: 3, medium: 1)"),
    ("none", True, None),
])
async def test_fail_on_threshold(run_step: RunStep, project: Path, fail_on: str, success: bool,
                                 message: str | None) -> None:
    run = await run_step("security_scan", {"scanners": ["secrets"], "fail_on": fail_on})
    assert run.result.success is success
    assert run.result.error == message
    assert run.result.result["total"] == 7


async def test_only_medium_findings_pass_the_default_threshold(
        run_step: RunStep, project: Path) -> None:
    run = await run_step("security_scan", {"paths": ["app"]})
    assert run.result.success
    assert triples(run.result.result, "secrets") == {("generic_secret", "app/client.js", 3)}
    assert run.result.result["counts"]["medium"] == 1


async def test_paths_exclude_and_working_dir(run_step: RunStep, project: Path) -> None:
    run = await run_step("security_scan", {"paths": ["config", "ci"], "exclude": ["*.env"]})
    assert {t[0] for t in triples(run.result.result, "secrets")} == {
        "aws_access_key_id", "aws_secret_access_key", "github_token"}
    run = await run_step("security_scan", {"working_dir": "ci", "fail_on": "none"})
    assert triples(run.result.result, "secrets") == {("gitlab_token", "notify.env", 1),
                                                     ("slack_webhook", "notify.env", 2)}


async def test_real_bandit_run_is_parsed_and_masked(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    run = await run_step("security_scan", {"scanners": ["bandit", "secrets"], "fail_on": "none"},
                         env=path_env(tmp_path))
    assert run.result.success, run.result.error
    result = run.result.result
    bandit = {(f["rule"], f["file"], f["line"], f["severity"])
              for f in result["findings"] if f["scanner"] == "bandit"}
    assert bandit == {
        ("B404", "app/tasks.py", 3, "low"),
        ("B105", "app/tasks.py", 7, "low"),
        ("B602", "app/tasks.py", 11, "high"),
        ("B506", "app/tasks.py", 15, "medium"),
        ("B105", "config/settings.py", 4, "low"),
        ("B105", "config/settings.py", 5, "low"),
    }
    by_line = {(f["file"], f["line"]): f for f in result["findings"] if f["scanner"] == "bandit"}
    assert by_line[("app/tasks.py", 11)]["excerpt"] == "return subprocess.call(command, shell=True)"
    assert by_line[("config/settings.py", 5)]["excerpt"] == 'GITHUB_TOKEN = "ghp_****"'
    status = result["scanners"]["bandit"]
    assert status["status"] == "ok"
    assert status["exit_codes"] == [1]
    assert status["findings"] == 6
    assert triples(result, "secrets") == EXPECTED_SECRETS
    assert result["counts"] == {"critical": 3, "high": 4, "medium": 2, "low": 4}
    assert_no_secret(json.dumps(result))
    assert_no_secret(run.log.text)
    assert "bandit: 6 findings (high: 1, medium: 1, low: 4)" in run.log.lines


async def test_bandit_that_writes_no_report_is_a_failed_scanner(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    stub(tmp_path, "bandit", "import sys\nprint('bandit: internal error')\nsys.exit(2)\n")
    run = await run_step("security_scan", {"scanners": ["secrets", "bandit"]},
                         env=path_env(tmp_path))
    assert not run.result.success
    assert run.result.error_code == "scanner_failed"
    assert run.result.error == (
        "scanner 'bandit' failed: exited with code 2 and no report was written to "
        "1-bandit.json; 6 findings at or above 'high' (critical: 3, high: 3)")
    assert run.result.result["scanners"]["bandit"]["status"] == "failed"
    assert run.result.result["scanners"]["secrets"]["findings"] == 7


async def test_missing_tool_fails_before_anything_runs(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    run = await run_step("security_scan", {"scanners": ["secrets", "trivy"]},
                         env={"PATH": str(empty)})
    assert not run.result.success
    assert run.result.error == "tool 'trivy' is not installed on this worker"
    assert run.result.error_code == "tool_missing"
    assert run.result.result == {"scanner": "trivy"}
    assert run.log.lines == []


GENERIC_SARIF_SCRIPT = r"""
import json, os, sys
root = os.getcwd()
rule = lambda i, level: {"id": i, "shortDescription": {"text": i + " rule"},
                         "defaultConfiguration": {"level": level}}
doc = {"version": "2.1.0", "runs": [{
    "tool": {"driver": {"name": "lint", "rules": [rule("L1", "error"), rule("L2", "note")]},
             "extensions": [{"name": "pack", "rules": [{"id": "P9", "properties":
                                                        {"security-severity": "4.0"}}]}]},
    "results": [
        {"ruleId": "L1", "message": {"text": "eval of user input"},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": "app/tasks.py"},
                                             "region": {"startLine": 15}}}]},
        {"ruleId": "L2", "ruleIndex": 1, "message": {"text": "style"},
         "locations": [{"physicalLocation": {"artifactLocation": {
             "uri": "file://" + os.path.join(root, "app", "client.js")},
             "region": {"startLine": 2,
                        "snippet": {"text": "const api_key = \"Zx8fQ2vL9kR4tW7pN3mB6yH1\";"}}}}]},
        {"ruleId": "L3", "level": "warning",
         "message": {"text": "key AKIAIOSFODNN7EXAMPLE in use"}},
        {"rule": {"id": "P9", "index": 0, "toolComponent": {"index": 0}},
         "message": {"text": "from the pack"},
         "locations": [{"physicalLocation": {"artifactLocation": {"uri": "vendor/acme/creds.py"},
                                             "region": {"startLine": 1}}}]},
        {"ruleId": "L1", "kind": "pass", "message": {"text": "checked"}},
        {"ruleId": "L1", "message": {"text": "waived"}, "suppressions": [{"kind": "inSource"}]},
    ]}]}
os.makedirs("out", exist_ok=True)
with open(sys.argv[1], "w") as fh:
    json.dump(doc, fh)
sys.exit(1)
"""


async def test_generic_sarif_command_is_parsed(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    (project / "tools").mkdir()
    (project / "tools" / "lint.py").write_text(GENERIC_SARIF_SCRIPT)
    (project / "out").mkdir()
    run = await run_step("security_scan", {
        "scanners": [{"name": "lint", "command": f"{sys.executable} tools/lint.py out/lint.sarif",
                      "sarif": "out/lint.sarif"}],
        "exclude": ["vendor"], "fail_on": "high"})
    result = run.result.result
    assert {(f["rule"], f["severity"], f["file"], f["line"]) for f in result["findings"]} == {
        ("L1", "high", "app/tasks.py", 15),
        ("L2", "low", "app/client.js", 2),
        ("L3", "medium", None, None),
    }
    assert result["scanners"]["lint"]["exit_codes"] == [1]
    assert run.result.error == "1 finding at or above 'high' (high: 1)"
    by_rule = {f["rule"]: f for f in result["findings"]}
    assert by_rule["L2"]["excerpt"] == 'const api_key = "Zx8f****";'
    assert by_rule["L3"]["message"] == "key AKIA**** in use"
    assert_no_secret(json.dumps(result))

    run = await run_step("security_scan", {
        "scanners": ["secrets", {"name": "lint", "sarif": "out/lint.sarif",
                                 "command": f"{sys.executable} tools/lint.py out/lint.sarif"}],
        "fail_on": "none"})
    assert "out/lint.sarif" not in {f["file"] for f in run.result.result["findings"]}
    assert (project / "out" / "lint.sarif").is_file()

    run = await run_step("security_scan", {
        "scanners": [{"name": "lint", "command": f"{sys.executable} tools/lint.py out/lint.sarif",
                      "sarif": "out/lint.sarif"}], "fail_on": "medium"})
    assert ("P9", "medium", "vendor/acme/creds.py", 1) in {
        (f["rule"], f["severity"], f["file"], f["line"]) for f in run.result.result["findings"]}


async def test_generic_command_stale_or_broken_report(run_step: RunStep, project: Path) -> None:
    (project / "old.sarif").write_text('{"version": "2.1.0", "runs": []}')
    run = await run_step("security_scan", {
        "scanners": [{"name": "gone", "command": "exit 3", "sarif": "old.sarif"}]})
    assert run.result.error == (
        "scanner 'gone' failed: exited with code 3 and no report was written to old.sarif")
    run = await run_step("security_scan", {
        "scanners": [{"name": "junk", "command": "echo 'not json' > junk.sarif",
                      "sarif": "junk.sarif"}]})
    assert run.result.error is not None
    assert run.result.error.startswith(
        "scanner 'junk' failed: exited with code 0 and report junk.sarif is not valid JSON")
    run = await run_step("security_scan", {
        "scanners": [{"name": "odd", "command": "echo '{\"runs\": 1}' > odd.sarif",
                      "sarif": "odd.sarif"}]})
    assert run.result.error == ("scanner 'odd' failed: exited with code 0 and not a SARIF log: "
                                "it has no 'runs' list")


async def test_findings_are_capped(run_step: RunStep, workspace: Path) -> None:
    body = "\n".join(f'api_key = "AKIA{i:016d}"' for i in range(1100))
    (workspace / "keys.txt").write_text(body)
    run = await run_step("security_scan", {"scanners": ["secrets"]})
    result = run.result.result
    assert result["total"] == 1100
    assert len(result["findings"]) == 1000
    assert result["truncated"] == 100
    assert result["counts"]["critical"] == 1100
    assert sum(1 for line in run.log.lines if line.startswith("  [critical]")) == 25


async def test_step_secrets_are_masked_in_results(run_step: RunStep, workspace: Path) -> None:
    script = (
        "import json\n"
        "json.dump({'runs': [{'tool': {'driver': {'name': 'x'}}, 'results': [{'ruleId': 'R',"
        " 'message': {'text': 'login with opensesame-please'}, 'locations': [{"
        "'physicalLocation': {'artifactLocation': {'uri': 'a.py'}, 'region': {'startLine': 1,"
        " 'snippet': {'text': 'pw = \"opensesame-please\"'}}}}]}]}]}, open('r.sarif', 'w'))\n")
    (workspace / "w.py").write_text(script)
    run = await run_step("security_scan", {
        "scanners": [{"name": "x", "command": f"{sys.executable} w.py", "sarif": "r.sarif"}]},
        secrets={"LOGIN": "opensesame-please"})
    finding = run.result.result["findings"][0]
    assert finding["message"] == "login with ****"
    assert finding["excerpt"] == 'pw = "****"'
    assert "opensesame-please" not in run.log.text


async def test_generic_command_tool_must_exist(
        run_step: RunStep, workspace: Path, tmp_path: Path) -> None:
    run = await run_step("security_scan", {
        "scanners": [{"name": "x", "command": "nosuchscanner --out a.sarif", "sarif": "a.sarif"}]},
        env=path_env(tmp_path))
    assert run.result.error == "tool 'nosuchscanner' is not installed on this worker"
    run = await run_step("security_scan", {
        "scanners": [{"name": "x", "command": "FOO=1 nosuchscanner", "sarif": "a.sarif"}]},
        env=path_env(tmp_path))
    assert run.result.error == ("scanner 'x' failed: exited with code 127 and no report was "
                                "written to a.sarif")


async def test_bad_paths_are_config_failures(run_step: RunStep, project: Path) -> None:
    run = await run_step("security_scan", {"paths": ["missing"]})
    assert run.result.error == "paths: 'missing' does not exist in the working directory"
    assert run.result.error_code == "invalid_config"
    run = await run_step("security_scan", {"working_dir": "nope"})
    assert run.result.error == "working_dir 'nope' does not exist in the workspace"


@pytest.mark.parametrize(("config", "message"), [
    ({"scanners": ["nmap"]}, "unknown scanner 'nmap'"),
    ({"scanners": [{"name": "x", "command": "x"}]}, "'command' needs 'sarif'"),
    ({"scanners": [{"name": "bandit", "sarif": "a.sarif"}]}, "'sarif' needs 'command'"),
    ({"scanners": ["secrets", "secrets"]}, "repeated: secrets"),
    ({"scanners": [{"name": "x", "command": "x", "sarif": "../a.sarif"}]},
     "must be relative and stay inside"),
    ({"paths": ["/etc"]}, "must be relative"),
    ({"fail_on": "severe"}, "Input should be"),
    ({"scanners": []}, "at least 1 item"),
])
def test_config_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(DefinitionError) as info:
        get_step_type("security_scan").parse_config(config, step="scan")
    assert message in str(info.value)


def test_config_defaults() -> None:
    config = get_step_type("security_scan").parse_config({}, step="scan")
    assert [s.name for s in config.scanners] == ["secrets"]
    assert config.paths == ["."]
    assert config.fail_on == "high"
