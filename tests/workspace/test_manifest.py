"""Manifests: paths, links, encoding and the order in which they apply (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ansflow.workspace.manifest import (
    DIR,
    FILE,
    LINK,
    Entry,
    ManifestRef,
    check_path,
    decode,
    encode,
    link_stays_inside,
    merge,
    restore_order,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize("path", ["a", "a/b", ".git/config", "a/..b", "x y/z"])
def test_clean_relative_paths_are_accepted(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize("path", ["", "/etc/passwd", "..", "../x", "a/../../x", "a//b", "./a",
                                  "a/./b", "a/", ".", "a\0b"])
def test_paths_that_are_not_clean_and_inside_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="not a relative path inside the workspace"):
        check_path(path)


@pytest.mark.parametrize(("path", "target", "inside"), [
    ("a/link", "b", True), ("a/link", "../b", True), ("link", "a/b/../c", True),
    ("link", "..", False), ("a/link", "../../etc", False), ("link", "/etc/passwd", False),
    ("a/b/link", "../../../x", False), ("link", "", False),
])
def test_links_must_resolve_inside_the_workspace(path: str, target: str, inside: bool) -> None:
    assert link_stays_inside(path, target) is inside


def test_a_manifest_round_trips_and_is_canonical() -> None:
    changes = {"b": Entry(FILE, 0o755, "a" * 64, 3), "a": None, "l": Entry(LINK, 0o777, target="b"),
               "d": Entry(DIR, 0o700)}
    data = encode(changes)
    assert decode(data) == changes
    assert encode(dict(reversed(list(changes.items())))) == data


@pytest.mark.parametrize("bad", [
    b'{"format": 1, "entries": {"../x": null}}',
    b'{"format": 1, "entries": {"/abs": null}}',
    b'{"format": 1, "entries": {"a": ["f", 420, "nothex", 1]}}',
    b'{"format": 1, "entries": {"a": ["x", 420]}}',
    b'{"format": 2, "entries": {}}',
    b'not json',
])
def test_a_malformed_or_escaping_manifest_is_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        decode(bad)


def names(refs: list[ManifestRef]) -> list[str]:
    return [ref.step for ref in restore_order(refs)]


def test_parallel_branches_apply_in_completion_order_so_the_last_to_finish_wins() -> None:
    left = ManifestRef("left", "1" * 64, at(5))
    right = ManifestRef("right", "2" * 64, at(3))
    assert names([left, right]) == ["right", "left"]
    assert names([ManifestRef("left", "1" * 64, at(2)), right]) == ["left", "right"]


def test_a_step_applies_after_its_dependencies_whatever_the_clocks_say() -> None:
    # a skewed clock on another host must not let a dependency override its dependent
    build = ManifestRef("build", "1" * 64, at(10))
    test = ManifestRef("test", "2" * 64, at(1), depends_on=("build",))
    assert names([test, build]) == ["build", "test"]


def test_equal_completion_times_fall_back_to_the_step_name() -> None:
    refs = [ManifestRef("b", "1" * 64, at(1)), ManifestRef("a", "2" * 64, at(1))]
    assert names(refs) == ["a", "b"]


def test_merge_keeps_the_last_word_on_each_path() -> None:
    first = {"x": Entry(FILE, 0o644, "1" * 64, 1), "y": Entry(FILE, 0o644, "2" * 64, 1)}
    second = {"x": None}
    assert merge([first, second]) == {"x": None, "y": first["y"]}
