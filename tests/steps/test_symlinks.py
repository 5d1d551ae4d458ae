"""Globs over the workspace never follow a symbolic link out of it: artifacts, test and
coverage reports, kubernetes manifests and scanner reports. The links are made by the
step's own command, as code from an untrusted commit would."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ansflow.steps.files import OutsideWorkspace, glob_files, open_inside
from tests.steps.conftest import RunStep
from tests.steps.test_deploy_remote import Stubs

LOOT = "LOOT-0b9d2c"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workspace, with a file the step must not get at."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    (path / "secret.txt").write_text(f"{LOOT}\n")
    (path / "junit.xml").write_text(
        '<testsuite name="x"><testcase classname="c" name="' + LOOT + '">'
        '<failure message="' + LOOT + '"/></testcase></testsuite>')
    (path / "report.sarif").write_text(json.dumps({"version": "2.1.0", "runs": []}))
    return path


def links(outside: Path) -> str:
    return (f"mkdir -p dist/sub && echo built > dist/app.txt && echo inner > README && "
            f"ln -s {outside}/secret.txt dist/evil.txt && "
            f"ln -s ../README dist/inner.txt && ln -s {outside} dist/sub/far")


async def test_artifacts_skip_links_out_of_the_workspace(
        run_step: RunStep, workspace: Path, tmp_path: Path, outside: Path) -> None:
    run = await run_step("build", {"tool": "shell", "command": links(outside),
                                   "artifacts": ["dist/*.txt", "dist/*/*/*.txt"],
                                   "allow_empty_artifacts": True})
    assert run.result.success, run.result.error
    names = sorted(a["path"] for a in run.result.result["artifacts"])
    assert names == ["dist/app.txt", "dist/inner.txt"]
    stored = tmp_path / "artifacts"
    copied = sorted(str(p.relative_to(stored)) for p in stored.rglob("*") if p.is_file())
    assert copied == ["dist/app.txt", "dist/inner.txt"]
    assert (stored / "dist" / "inner.txt").read_text() == "inner\n"
    assert all(LOOT not in p.read_text() for p in stored.rglob("*") if p.is_file())
    assert "artifact dist/evil.txt: a symbolic link to outside the workspace; skipped" in (
        run.log.lines)
    assert "artifact dist/sub/far/secret.txt: a symbolic link to outside the workspace; " \
        "skipped" in run.log.lines


async def test_only_links_out_is_no_artifact(run_step: RunStep, outside: Path) -> None:
    run = await run_step("build", {"tool": "shell", "artifacts": ["dist/*"], "command":
                                   f"mkdir dist && ln -s {outside}/secret.txt dist/x"})
    assert not run.result.success
    assert run.result.error == "artifacts: no file matches 'dist/*'"


async def test_test_reports_skip_links_out_of_the_workspace(
        run_step: RunStep, workspace: Path, outside: Path) -> None:
    command = (f"mkdir -p reports && ln -s {outside}/junit.xml reports/evil.xml && "
               "echo '<testsuite name=\"ok\"><testcase classname=\"c\" name=\"t\"/>"
               "</testsuite>' > reports/good.xml")
    run = await run_step("test", {"command": command, "reports": ["reports/*.xml"]})
    assert run.result.success, run.result.error
    assert run.result.result["total"] == 1
    assert run.result.result["reports"] == ["reports/good.xml"]
    assert LOOT not in json.dumps(run.result.result)
    assert "report reports/evil.xml: a symbolic link to outside the workspace; skipped" in (
        run.log.lines)


async def test_a_report_glob_matching_only_links_out_is_unmatched(
        run_step: RunStep, outside: Path) -> None:
    command = f"mkdir -p reports && ln -s {outside}/junit.xml reports/evil.xml"
    run = await run_step("test", {"command": command, "reports": ["reports/*.xml"]})
    assert not run.result.success
    assert run.result.error is not None and "no file matches 'reports/*.xml'" in (
        run.result.error)
    assert LOOT not in run.log.text


async def test_a_scanner_report_linked_out_is_not_read(
        run_step: RunStep, outside: Path) -> None:
    scanner = {"name": "mine", "command": f"ln -sf {outside}/report.sarif out.sarif",
               "sarif": "out.sarif"}
    run = await run_step("security_scan", {"scanners": [scanner]})
    assert not run.result.success
    status = run.result.result["scanners"]["mine"]
    assert status["status"] == "failed"
    assert "a symbolic link to outside the workspace" in status["error"]


async def test_kubernetes_manifests_skip_links_out(
        run_step: RunStep, workspace: Path, tmp_path: Path, outside: Path) -> None:
    stubs = Stubs(tmp_path)
    stubs.add("kubectl")
    (workspace / "k8s").mkdir()
    (workspace / "k8s" / "app.yaml").write_text("kind: Deployment\n")
    os.symlink(outside / "secret.txt", workspace / "k8s" / "evil.yaml")
    run = await run_step("deploy", {"target": "kubernetes", "environment": "prod",
                                    "manifests": ["k8s/*.yaml"]}, env=stubs.env)
    assert run.result.success, run.result.error
    assert stubs.calls() == [["kubectl", "apply", "-f", "k8s/app.yaml"]]
    assert "manifest k8s/evil.yaml: a symbolic link to outside the workspace; skipped" in (
        run.log.lines)


def test_glob_files_and_open_inside(workspace: Path, outside: Path) -> None:
    (workspace / "a.txt").write_text("a")
    os.symlink(outside / "secret.txt", workspace / "b.txt")
    os.symlink("a.txt", workspace / "c.txt")
    found = glob_files(workspace, ["*.txt", "a.txt"], workspace)
    assert [p.name for p in found.files] == ["a.txt", "c.txt"]
    assert found.labels(workspace) == ["b.txt"]
    with open_inside(workspace / "c.txt", workspace) as handle:
        assert handle.read() == b"a"
    # a link swapped after the glob is caught on the file actually opened
    (workspace / "c.txt").unlink()
    os.symlink(outside / "secret.txt", workspace / "c.txt")
    with pytest.raises(OutsideWorkspace):
        open_inside(workspace / "c.txt", workspace)
