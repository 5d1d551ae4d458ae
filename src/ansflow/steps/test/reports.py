"""Readers for JUnit XML test reports and Cobertura XML coverage reports.

Both stream the file through expat into a small event target, so neither builds a tree
(``system-out`` sections of several megabytes cost nothing). A document with a DOCTYPE
is refused before its declarations are read: test reports never need one, and refusing
it rules out entity expansion bombs and external entities (what ``defusedxml`` does).

JUnit dialects: the root is ``<testsuites>`` or ``<testsuite>``, suites may nest, and a
``<testcase>`` counts as failed, errored or skipped by its first ``failure``, ``error``
or ``skipped`` child (pytest, Maven Surefire, jest-junit; Surefire's ``flakyFailure``
and ``rerunFailure`` children of a test that finally passed do not count). Counts come
from the test cases, not from the suites' attributes, which some tools leave out.

All functions here block; callers run them in ``asyncio.to_thread``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READ_CHUNK = 1 << 16
MESSAGE_LIMIT = 1000
FAILED_TESTS_LIMIT = 100
OUTCOMES = ("failure", "error", "skipped")


class ReportError(Exception):
    """A report file cannot be read; the message names the file."""


class _Refused(Exception):
    pass


@dataclass(slots=True)
class FailedTest:
    name: str
    message: str
    kind: str
    """``failure`` or ``error``."""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "message": self.message, "kind": self.kind}


@dataclass(slots=True)
class TestSummary:
    """Counts over one or more JUnit reports."""

    __test__ = False

    total: int = 0
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    failed_tests: list[FailedTest] = field(default_factory=list)

    def add(self, other: TestSummary) -> None:
        self.total += other.total
        self.passed += other.passed
        self.failed += other.failed
        self.skipped += other.skipped
        self.errors += other.errors
        self.failed_tests.extend(other.failed_tests)

    def to_dict(self) -> dict[str, Any]:
        shown = self.failed_tests[:FAILED_TESTS_LIMIT]
        return {"total": self.total, "passed": self.passed, "failed": self.failed,
                "skipped": self.skipped, "errors": self.errors,
                "failed_tests": [t.to_dict() for t in shown],
                "failed_tests_omitted": len(self.failed_tests) - len(shown)}


@dataclass(frozen=True, slots=True)
class Coverage:
    lines_valid: int
    lines_covered: int
    line_rate: float | None = None
    """The report's own ratio, used when it counts no lines."""

    @property
    def percent(self) -> float:
        if self.lines_valid:
            return 100.0 * self.lines_covered / self.lines_valid
        return 100.0 * (self.line_rate if self.line_rate is not None else 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"percent": round(self.percent, 2), "lines_valid": self.lines_valid,
                "lines_covered": self.lines_covered}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _parse(path: Path, target: Any, what: str) -> Any:
    """Feed ``path`` to ``target``; ``what`` names the file in errors."""
    parser = ET.XMLParser(target=target)
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                parser.feed(chunk)
        return parser.close()
    except ET.ParseError as exc:
        raise ReportError(f"{what} is not well-formed XML: {exc}") from exc
    except _Refused as exc:
        raise ReportError(f"{what} declares a DOCTYPE ({exc}); refused: "
                          "reports must not use DTDs or entities") from exc
    except OSError as exc:
        raise ReportError(f"{what} cannot be read: {exc.strerror}") from exc


class _SafeTarget:
    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise _Refused(name)

    def data(self, text: str) -> None:
        pass


@dataclass(slots=True)
class _Case:
    name: str
    classname: str
    outcome: str | None = None
    message: str | None = None
    text: list[str] = field(default_factory=list)
    capturing: bool = False

    def display_name(self) -> str:
        if not self.classname or self.classname == self.name:
            return self.name
        return f"{self.classname}::{self.name}"

    def display_message(self) -> str:
        message = self.message
        if not message:
            lines = (line.strip() for line in "".join(self.text).splitlines())
            message = next((line for line in lines if line), "")
        return message[:MESSAGE_LIMIT]


class _JUnitTarget(_SafeTarget):
    def __init__(self, what: str) -> None:
        self.what = what
        self.depth = 0
        self.suites: list[str] = []
        self.case: _Case | None = None
        self.summary = TestSummary()

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        name = _local(tag)
        if self.depth == 0 and name not in ("testsuites", "testsuite"):
            raise ReportError(f"{self.what}: root element is <{name}>, "
                              "not <testsuites> or <testsuite>; is it a JUnit XML report?")
        self.depth += 1
        if name == "testsuite":
            self.suites.append(attrib.get("name", ""))
        elif name == "testcase":
            self.case = _Case(name=attrib.get("name") or "(unnamed)",
                              classname=attrib.get("classname") or
                              next((s for s in reversed(self.suites) if s), ""))
        elif self.case is not None and name in OUTCOMES:
            self._outcome(self.case, name, attrib)

    def _outcome(self, case: _Case, name: str, attrib: Mapping[str, str]) -> None:
        if case.outcome is None or OUTCOMES.index(name) < OUTCOMES.index(case.outcome):
            case.outcome = name
            case.message = attrib.get("message")
            case.text = []
            case.capturing = name != "skipped" and not case.message

    def data(self, text: str) -> None:
        case = self.case
        if case is not None and case.capturing and sum(map(len, case.text)) < 4 * MESSAGE_LIMIT:
            case.text.append(text)

    def end(self, tag: str) -> None:
        self.depth -= 1
        name = _local(tag)
        if name == "testsuite" and self.suites:
            self.suites.pop()
        elif name == "testcase" and self.case is not None:
            self._count(self.case)
            self.case = None
        elif name in OUTCOMES and self.case is not None:
            self.case.capturing = False

    def _count(self, case: _Case) -> None:
        summary = self.summary
        summary.total += 1
        if case.outcome == "failure":
            summary.failed += 1
        elif case.outcome == "error":
            summary.errors += 1
        elif case.outcome == "skipped":
            summary.skipped += 1
        else:
            summary.passed += 1
            return
        if case.outcome != "skipped":
            summary.failed_tests.append(
                FailedTest(case.display_name(), case.display_message(), case.outcome))

    def close(self) -> TestSummary:
        return self.summary


def parse_junit(path: Path, label: str | None = None) -> TestSummary:
    """Count the test cases of one JUnit XML file. ``label`` names it in errors."""
    what = f"test report {label or str(path)!r}"
    summary: TestSummary = _parse(path, _JUnitTarget(what), what)
    return summary


def parse_junit_files(paths: Iterable[Path], labels: Mapping[Path, str] | None = None
                      ) -> TestSummary:
    total = TestSummary()
    for path in paths:
        total.add(parse_junit(path, (labels or {}).get(path)))
    return total


class _CoberturaTarget(_SafeTarget):
    """Root ``lines-valid``/``lines-covered`` when present; else counts the ``<line>``
    elements of classes (not those repeated under methods)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.stack: list[str] = []
        self.root: dict[str, str] = {}
        self.valid = 0
        self.covered = 0

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        name = _local(tag)
        if not self.stack:
            if name != "coverage":
                raise ReportError(f"{self.what}: root element is <{name}>, not <coverage>; "
                                  "is it a Cobertura XML report?")
            self.root = dict(attrib)
        elif name == "line" and self.stack[-2:] == ["class", "lines"]:
            self.valid += 1
            self.covered += (_int(attrib.get("hits")) or 0) > 0
        self.stack.append(name)

    def end(self, tag: str) -> None:
        self.stack.pop()

    def close(self) -> Coverage:
        valid = _int(self.root.get("lines-valid"))
        covered = _int(self.root.get("lines-covered"))
        if valid is None or covered is None:
            valid, covered = self.valid, self.covered
        rate = self.root.get("line-rate")
        try:
            line_rate = float(rate) if rate is not None else None
        except ValueError:
            line_rate = None
        return Coverage(valid, covered, line_rate)


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def parse_cobertura(path: Path, label: str | None = None) -> Coverage:
    """Line coverage of one Cobertura XML file. ``label`` names it in errors."""
    what = f"coverage report {label or str(path)!r}"
    coverage: Coverage = _parse(path, _CoberturaTarget(what), what)
    return coverage


def merge_coverage(reports: Iterable[Coverage]) -> Coverage | None:
    """One figure over several reports: their line counts added up."""
    items = list(reports)
    if not items:
        return None
    if len(items) == 1:
        return items[0]
    rates = [c.line_rate for c in items if c.line_rate is not None]
    return Coverage(sum(c.lines_valid for c in items), sum(c.lines_covered for c in items),
                    sum(rates) / len(rates) if rates else None)
