"""``hashFiles()``: in the expression language (pure) and over a real workspace."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ansflow.errors import ExpressionError
from ansflow.spec import expr
from ansflow.steps.files import hash_files


def test_hash_files_is_given_by_the_engine_and_refused_without_it() -> None:
    seen: list[list[str]] = []

    def fake(patterns: list[str]) -> str:
        seen.append(patterns)
        return "abc"

    ctx = expr.EvalContext(hash_files=fake)
    assert expr.render("k-${{ hashFiles('a/*.lock', 'b') }}", ctx) == "k-abc"
    assert seen == [["a/*.lock", "b"]]
    with pytest.raises(ExpressionError, match="only available in a step"):
        expr.render("${{ hashFiles('x') }}", expr.EvalContext())


def test_hash_files_hashes_each_file_in_path_order(tmp_path: Path) -> None:
    (tmp_path / "b.lock").write_text("two")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.lock").write_text("one")
    expected = hashlib.sha256(hashlib.sha256(b"two").digest()
                              + hashlib.sha256(b"one").digest()).hexdigest()
    assert hash_files(tmp_path, ["**/*.lock"]) == expected  # "b.lock" < "sub/a.lock"
    assert hash_files(tmp_path, ["nothing/*"]) == ""
    (tmp_path / "b.lock").write_text("changed")
    assert hash_files(tmp_path, ["**/*.lock"]) != expected


def test_hash_files_does_not_follow_links_out_of_the_workspace(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", root / "x.lock")
    assert hash_files(root, ["*.lock"]) == ""
