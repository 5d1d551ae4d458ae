"""Globs (trigger filters, ``matches()``, scan excludes) match like the regular expression
they stand for, in time linear in the value."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansflow.spec.glob import compile_glob, glob_match
from tests.linear import assert_linear


def oracle(pattern: str) -> re.Pattern[str]:
    """The glob as a (backtracking) regular expression: the meaning ``glob_match`` keeps."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])))
            i += 1
    return re.compile("".join(out), re.DOTALL)


@pytest.mark.parametrize(("value", "pattern", "expected"), [
    ("main", "main", True),
    ("feature/x", "feature/*", True),
    ("feature/x/y", "feature/*", False),
    ("feature/x/y", "feature/**", True),
    ("a/b", "a/**/b", True),
    ("a/x/y/b", "a/**/b", True),
    ("a/xb", "a/**/b", False),
    ("v1.2", "v?.?", True),
    ("v1/2", "v?/?", True),
    ("v1/2", "v???", False),
    ("src/x.py", "**.py", True),
    ("x.py", "**/*.py", True),
    ("[x]", "[x]", True),
    ("", "*", True),
    ("", "", True),
    ("a", "", False),
])
def test_examples(value: str, pattern: str, expected: bool) -> None:
    assert glob_match(value, pattern) is expected
    assert (oracle(pattern).fullmatch(value) is not None) is expected


ALPHABET = st.sampled_from(["a", "b", "/", ".", "x"])
PATTERN_PARTS = st.sampled_from(["a", "b", "/", ".", "*", "**", "**/", "?", "["])


@settings(max_examples=600, deadline=None)
@given(st.lists(PATTERN_PARTS, max_size=8).map("".join), st.lists(ALPHABET, max_size=12)
       .map("".join))
def test_same_answers_as_the_regular_expression(pattern: str, value: str) -> None:
    assert glob_match(value, pattern) is (oracle(pattern).fullmatch(value) is not None)


@pytest.mark.parametrize(("pattern", "value"), [
    ("*a*a*a*a*a*a*a*b", "a" * 200_000),          # the regex backtracks ~n**7 here
    ("**a**a**a**a**a**b", "a/" * 100_000),
    ("**/**/**/**/**/x", "a/" * 100_000),
    ("?*?*?*?*?*/", "ab" * 100_000),
])
def test_adversarial_values_are_linear(pattern: str, value: str) -> None:
    glob = compile_glob(pattern)
    assert not glob.fullmatch(value)
    # 100,000 characters take about 25 ms here; one second leaves room for a loaded box
    assert_linear(lambda n: glob.fullmatch(value[:n]), len(value) // 2, within=1.0)
