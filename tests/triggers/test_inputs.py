"""The rules for what a trigger brings: refs, commits, variables (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from ansflow.triggers.inputs import (
    commit_problem,
    ref_problem,
    start_problems,
    variables_problems,
)


@pytest.mark.parametrize("ref", [
    "main", "feature/x", "refs/heads/main", "refs/pull/42/head", "v1.2.3", "a-b_c",
    "feat$(touch${IFS}pwned)", "`id`", "caf\u00e9", "x" * 255, "refs/heads/-x", "HEAD",
])
def test_valid_git_ref_names_pass(ref: str) -> None:
    assert ref_problem(ref) is None


@pytest.mark.parametrize("ref", [
    "", "-x", "--upload-pack=x", ".hidden", "a/.hidden", "a..b", "a b", "a\tb", "a\nb",
    "a\x7fb", "a~1", "a^", "a:b", "a?", "a*", "a[1]", "a\\b", "a//b", "/a", "a/", "a.",
    "a.lock", "a.lock/b", "a@{1}", "@", "x" * 256,
])
def test_invalid_git_ref_names_are_refused(ref: str) -> None:
    assert ref_problem(ref) is not None


def test_full_refs_start_with_refs() -> None:
    assert ref_problem("main", full=True) == "is not a full ref name (refs/...): 'main'"
    assert ref_problem("refs/tags/v1", full=True) is None


@pytest.mark.parametrize(("commit", "ok"), [
    ("abcd", True), ("ABCDEF0123", True), ("a" * 64, True), ("abc", False),
    ("a" * 65, False), ("abcg", False), ("abcd ", False), ("", False),
])
def test_commits_are_4_to_64_hex_digits(commit: str, ok: bool) -> None:
    assert (commit_problem(commit) is None) == ok


@pytest.mark.parametrize(("variables", "problems"), [
    ({"a": "x", "_B9": 1, "f": 1.5, "t": True, "n": None}, []),
    ({"a" * 64: "x"}, []),
    ({"a" * 65: "x"}, ["a" * 65]),
    ({"9a": "x", "a-b": "x", "": "x"}, ["9a", "a-b", ""]),
    ({"s": "x" * 4096, "u": "\u00e9" * 2048}, []),
    ({"s": "x" * 4097, "u": "\u00e9" * 2049}, ["s", "u"]),
    ({"l": [], "d": {}, "i": 2**63, "inf": float("inf"), "z": "a\x00"},
     ["l", "d", "i", "inf", "z"]),
    ({"bad": "\ud800"}, ["bad"]),
])
def test_variables(variables: dict[str, Any], problems: list[str]) -> None:
    assert [name for name, _ in variables_problems(variables)] == problems


def test_too_many_variables() -> None:
    assert variables_problems({f"v{i}": i for i in range(100)}) == []
    assert variables_problems({f"v{i}": i for i in range(101)})[0] == (
        "", "has more than 100 variables")


def test_start_problems_name_every_field() -> None:
    assert start_problems("-x", "zz", {"1": "a"}) == [
        "ref is not a valid git ref name: '-x'",
        "commit is not a commit id (4 to 64 hex digits): 'zz'",
        "variables.1 is not a variable name (one must match [A-Za-z_][A-Za-z0-9_]{0,63})"]
    assert start_problems(None, None, {}) == []
