from __future__ import annotations

import os
from pathlib import Path

import pytest

from ansflow.steps.security_scan.findings import PathFilter
from ansflow.steps.security_scan.secret_scanner import (
    MAX_FILE_BYTES,
    find_secrets,
    mask_secrets,
    scan_text,
    scan_tree,
    shannon_entropy,
)
from tests.linear import assert_linear

# Built by concatenation so that no complete token sits in the source as a literal.
GHP = "ghp_" + "EXAMPLE0fake0token0for0tests" + "00000000"
GHO = "gho_" + "EXAMPLE0fake0token0for0tests" + "11111111"
FINE_GRAINED = ("github_pat_" + "EXAMPLE0fake0token0001" + "_" + "A" * 20 + "EXAMPLEfake" * 3
                + "B" * 6)
SLACK_BOT = "xox" + "b-" + "000000000000-000000000000-EXAMPLEfakeEXAMPLE"
GLPAT = "glpat-" + "EXAMPLE_fake-token00"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"


def rules(line: str) -> list[str]:
    return [m.rule.id for m in find_secrets(line)]


@pytest.mark.parametrize(("line", "expected"), [
    (f'key = "{AWS_ID}"', ["aws_access_key_id"]),
    (f"export AWS_SECRET_ACCESS_KEY={AWS_SECRET}", ["aws_secret_access_key"]),
    (f'"aws_secret_key": "{AWS_SECRET}"', ["aws_secret_access_key"]),
    ("-----BEGIN OPENSSH PRIVATE KEY-----", ["private_key"]),
    ("-----BEGIN PRIVATE KEY-----", ["private_key"]),
    ("-----BEGIN PUBLIC KEY-----", []),
    (f"token: {GHP}", ["github_token"]),
    (f"{GHO} {FINE_GRAINED}", ["github_token", "github_token"]),
    (f"GITLAB={GLPAT}", ["gitlab_token"]),
    (f'slack = "{SLACK_BOT}"', ["slack_token"]),
    ("url=https://hooks.slack.com/services/T0AB/B0CD/abcdefABCDEF0123", ["slack_webhook"]),
    ('client_secret = "n8Qw2Lk9Zp4Xr7Tv1Bm6"', ["generic_secret"]),
    ("'db_password' => 'n8Qw2Lk9Zp4Xr7Tv1Bm6',", ["generic_secret"]),
    ('"apiKey": "n8Qw2Lk9Zp4Xr7Tv1Bm6"', ["generic_secret"]),
    ('password = "aaaaaaaaaaaaaaaaaaaaaaaa"', []),
    ('password = "n8Qw2Lk9Zp4"', []),
    ('token = "${{ secrets.DEPLOY_TOKEN }}"', []),
    ('description = "n8Qw2Lk9Zp4Xr7Tv1Bm6"', []),
    (f'ghp_short = "ghp_abc" and {AWS_ID[:-1]}', []),
])
def test_rules(line: str, expected: list[str]) -> None:
    assert rules(line) == expected


def test_a_specific_rule_claims_its_span_before_the_generic_one() -> None:
    assert rules(f'GITHUB_TOKEN = "{GHP}"') == ["github_token"]
    assert rules(f'api_key = "{AWS_ID}"') == ["aws_access_key_id"]


def test_entropy() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("abcd") == pytest.approx(2.0)
    assert shannon_entropy("n8Qw2Lk9Zp4Xr7Tv1Bm6") > 4


def test_masking_keeps_four_characters_of_each_secret() -> None:
    line = f'a = "{GHP}"; b = "{AWS_ID}"'
    assert mask_secrets(line) == 'a = "ghp_****"; b = "AKIA****"'
    assert mask_secrets(f"x\n{GLPAT}\n") == "x\nglpa****\n"
    assert mask_secrets("nothing here") == "nothing here"


def test_excerpt_of_a_long_line_is_a_window_around_the_secret() -> None:
    line = "x" * 5000 + f" token {GHP} " + "y" * 5000
    [finding] = scan_text(f"first\n{line}\n", "min.js")
    assert finding.line == 2
    assert finding.excerpt is not None
    assert "ghp_****" in finding.excerpt
    assert len(finding.excerpt) <= 200
    assert GHP not in finding.excerpt


def test_line_numbers_survive_crlf_and_form_feeds() -> None:
    text = f"a\r\n\x0c\r\nkey={AWS_ID}\r\n"
    [finding] = scan_text(text, "w.txt")
    assert (finding.line, finding.excerpt) == (3, "key=AKIA****")


def test_tree_walk_skips_vendored_binary_large_and_linked(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    secret = f"KEY={AWS_ID}\n"
    for rel in ["src/a.env", "node_modules/m/i.js", "vendor/v.py", "third_party/t.c",
                ".venv/lib/x.py", "__pycache__/c.txt", ".git/config", "docs/gen/api.md",
                "src/b.min.js"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret)
    (root / "src" / "blob.bin").write_bytes(b"\x00" * 10 + secret.encode())
    (root / "src" / "huge.txt").write_bytes(secret.encode() + b"z" * MAX_FILE_BYTES)
    (root / "src" / "link.env").symlink_to(root / "src" / "a.env")
    os.symlink(root / "src", root / "linked_dir")
    scan = scan_tree(root, [root], PathFilter(["docs/gen", "*.min.js"]))
    assert [(f.file, f.line, f.rule) for f in scan.findings] == [
        ("src/a.env", 1, "aws_access_key_id")]
    assert (scan.files, scan.skipped_binary, scan.skipped_large) == (1, 1, 1)


def test_overlapping_targets_scan_each_file_once(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.env").write_text(f"KEY={AWS_ID}\n")
    scan = scan_tree(tmp_path, [tmp_path, tmp_path / "src", tmp_path / "src" / "a.env"],
                     PathFilter([]))
    assert len(scan.findings) == 1
    assert scan.files == 1


def test_undecodable_bytes_do_not_stop_the_scan(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\nKEY=" + AWS_ID.encode() + b"\n")
    scan = scan_tree(tmp_path, [tmp_path], PathFilter([]))
    assert [(f.file, f.line) for f in scan.findings] == [("latin1.txt", 2)]


@pytest.mark.parametrize(("patterns", "path", "excluded"), [
    (["*.min.js"], "static/app.min.js", True),
    (["*.min.js"], "static/app.js", False),
    (["fixtures"], "tests/fixtures/a.py", True),
    (["fixtures"], "tests/fixtures_old/a.py", False),
    (["docs/**"], "docs/a/b.md", True),
    (["docs/**"], "src/docs/b.md", False),
    (["src/gen"], "src/gen/x/y.py", True),
    (["./src/gen/"], "src/gen/x.py", True),
    (["**/test_*.py"], "a/b/test_x.py", True),
    (["**/test_*.py"], "test_x.py", True),
    (["a?.txt"], "ab.txt", True),
    (["a?.txt"], "abc.txt", False),
    ([], "anything", False),
])
def test_path_filter(patterns: list[str], path: str, excluded: bool) -> None:
    assert PathFilter(patterns).excluded(path) is excluded


ADVERSARIAL_LINES = {
    # a secret-like name repeated: each word once started a scan to the line's end
    "repeated token": "token",
    "repeated password": "password",
    "repeated api_key": "api_key-",
    "an unclosed quote after an assignment": 'token="Ab1',
    "many specific matches on one line": AWS_ID + " ",
    "many generic matches on one line": 'secret_token = "n8Qw2Lk9Zp4Xr7Tv1Bm6" ',
    "slack prefixes": "https://hooks.slack.com/services/T" + "a" * 40,
    "token prefixes": "glpat-xoxb-ghp_",
}


@pytest.mark.parametrize("unit", ADVERSARIAL_LINES.values(), ids=ADVERSARIAL_LINES.keys())
def test_an_adversarial_line_is_scanned_in_linear_time(unit: str) -> None:
    def scan(size: int) -> None:
        scan_text(unit * (size // len(unit)) + "\n", "x.txt")

    # an 80 KB line of repeated "token" took 48 s before; now about 40 ms (two seconds
    # is the bound for a loaded machine)
    assert_linear(scan, 80_000, within=2.0)
