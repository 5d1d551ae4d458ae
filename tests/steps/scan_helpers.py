"""Shared by the security_scan tests: the fixture project, stub tools, secret checks."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROJECT = FIXTURES / "scan_project"
VENV_BIN = str(Path(sys.executable).parent)

FULL_SECRETS = [
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "ghp_EXAMPLEfakeTOKENforANSFLOWtests00000",
    "glpat-EXAMPLEfakeTOKEN0000",
    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "Zx8fQ2vL9kR4tW7pN3mB6yH1",
    "RkFLRSBLRVkgRk9SIFRFU1RT",
]
EXPECTED_SECRETS = {
    ("aws_access_key_id", "config/settings.py", 3),
    ("aws_secret_access_key", "config/settings.py", 4),
    ("github_token", "config/settings.py", 5),
    ("gitlab_token", "ci/notify.env", 1),
    ("slack_webhook", "ci/notify.env", 2),
    ("private_key", "deploy/keys/id_rsa", 1),
    ("generic_secret", "app/client.js", 3),
}


@pytest.fixture
def project(workspace: Path) -> Path:
    """The fixture repo in the workspace, plus what git cannot hold: a .git folder and a
    binary file, both with a secret inside that must not be reported."""
    shutil.copytree(PROJECT, workspace, dirs_exist_ok=True)
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text(
        '[remote "origin"]\n\turl = https://x:ghp_EXAMPLEfakeTOKENforANSFLOWtests00000@example.invalid/r\n')
    (workspace / "assets").mkdir()
    (workspace / "assets" / "logo.bin").write_bytes(
        b"\x89PNG\x00\x00\x01" + b'AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE"\n')
    return workspace


def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir(exist_ok=True)
    return path


def stub(tmp_path: Path, name: str, body: str) -> None:
    """An executable ``name`` on the test's PATH, written in Python."""
    script = bin_dir(tmp_path) / name
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)


def path_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir(tmp_path)}:{VENV_BIN}:{os.environ['PATH']}"}


def triples(result: dict[str, object], scanner: str) -> set[tuple[str, str, int]]:
    findings = result["findings"]
    assert isinstance(findings, list)
    return {(f["rule"], f["file"], f["line"]) for f in findings if f["scanner"] == scanner}


def assert_no_secret(text: str) -> None:
    for secret in FULL_SECRETS:
        assert secret not in text
