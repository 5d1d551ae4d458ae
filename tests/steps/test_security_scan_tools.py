"""security_scan with trivy, pip-audit and semgrep: stub executables on PATH stand in for
the tools (they need network access or are not installed here) and write real reports."""

from __future__ import annotations

import json
from pathlib import Path

from tests.steps.conftest import RunStep
from tests.steps.scan_helpers import (
    FIXTURES,
    assert_no_secret,
    bin_dir,
    path_env,
    project,
    stub,
)

__all__ = ["project"]


TRIVY_STUB = f"""
import json, os, sys
args = sys.argv[1:]
assert args[:5] == ["fs", "--quiet", "--format", "sarif", "--output"], args
target = os.path.abspath(args[-1])
text = open({str(FIXTURES / "scan_reports" / "trivy.sarif")!r}).read()
with open(args[5], "w") as fh:
    fh.write(text.replace("file:///__ROOT__/", "file://" + target + "/"))
with open(os.path.join({{bin!r}}, "trivy.calls"), "a") as fh:
    fh.write(" ".join(args[6:]) + "\\n")
"""


async def test_trivy_runs_once_per_path_and_maps_security_severity(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    stub(tmp_path, "trivy", TRIVY_STUB.replace("{bin!r}", repr(str(bin_dir(tmp_path)))))
    (project / "sub").mkdir()
    run = await run_step("security_scan", {"scanners": [{"name": "trivy",
                                                         "args": ["--scanners", "vuln,secret"]}],
                                           "paths": [".", "sub"]}, env=path_env(tmp_path))
    calls = (bin_dir(tmp_path) / "trivy.calls").read_text().splitlines()
    assert calls == ["--scanners vuln,secret .", "--scanners vuln,secret sub"]
    found = {(f["rule"], f["severity"], f["file"], f["line"])
             for f in run.result.result["findings"]}
    assert found == {
        ("CVE-2020-14343", "critical", "requirements.txt", 3),
        ("CVE-2019-1010083", "high", "requirements.txt", 1),
        ("aws-access-key-id", "critical", "config/settings.py", 3),
        ("CVE-2020-14343", "critical", "sub/requirements.txt", 3),
        ("CVE-2019-1010083", "high", "sub/requirements.txt", 1),
        ("aws-access-key-id", "critical", "sub/config/settings.py", 3),
    }
    assert run.result.error == "6 findings at or above 'high' (critical: 4, high: 2)"
    assert_no_secret(json.dumps(run.result.result))
    assert_no_secret(run.log.text)


PIP_AUDIT_STUB = f"""
import shutil, sys
args = sys.argv[1:]
assert args[:6] == ["-f", "json", "-o", args[3], "--progress-spinner", "off"], args
assert args[6:8] == ["-r", {{req!r}}], args
shutil.copy({str(FIXTURES / "scan_reports" / "pip_audit.json")!r}, args[3])
sys.exit(1)
"""


async def test_pip_audit_audits_requirements_files(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    stub(tmp_path, "pip-audit",
         PIP_AUDIT_STUB.replace("{req!r}", repr(str(project / "requirements.txt"))))
    run = await run_step("security_scan", {"scanners": ["pip-audit"]}, env=path_env(tmp_path))
    result = run.result.result
    assert {(f["rule"], f["file"], f["line"]) for f in result["findings"]} == {
        ("PYSEC-2019-179", "requirements.txt", 1),
        ("PYSEC-2018-66", "requirements.txt", 1),
        ("PYSEC-2021-142", "requirements.txt", 3),
    }
    assert result["scanners"]["pip-audit"]["problems"] == [
        "internal-helpers: Dependency not found on PyPI and could not be audited: "
        "internal-helpers (0.1.0)"]
    assert result["scanners"]["pip-audit"]["exit_codes"] == [1]
    assert run.result.error == "3 findings at or above 'high' (high: 3)"


async def test_pip_audit_without_requirements_is_skipped(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    stub(tmp_path, "pip-audit", "raise SystemExit('must not run')\n")
    run = await run_step("security_scan", {"scanners": ["pip-audit"], "paths": ["app"]},
                         env=path_env(tmp_path))
    assert run.result.success
    status = run.result.result["scanners"]["pip-audit"]
    assert status["status"] == "skipped"
    assert "no requirements*.txt or pyproject.toml in 'app'" in status["error"]


async def test_semgrep_gets_default_config_and_paths(
        run_step: RunStep, project: Path, tmp_path: Path) -> None:
    calls = bin_dir(tmp_path) / "semgrep.calls"
    stub(tmp_path, "semgrep", f"""
import json, sys
args = sys.argv[1:]
open({str(calls)!r}, "a").write(" ".join(a for a in args if not a.endswith(".sarif")) + "\\n")
json.dump({{"version": "2.1.0", "runs": [{{"tool": {{"driver": {{"name": "semgrep"}}}},
           "results": []}}]}}, open(args[args.index("--output") + 1], "w"))
""")
    run = await run_step("security_scan", {"scanners": ["semgrep"], "paths": ["app", "config"]},
                         env=path_env(tmp_path))
    assert run.result.success, run.result.error
    run = await run_step("security_scan", {"scanners": [{"name": "semgrep",
                                                         "args": ["--config=p/python"]}]},
                         env=path_env(tmp_path))
    assert run.result.success
    assert calls.read_text().splitlines() == [
        "scan --sarif --output --quiet --config auto app config",
        "scan --sarif --output --quiet --config=p/python .",
    ]
