from __future__ import annotations

from pathlib import Path

import pytest

from ansflow.steps.test.reports import (
    Coverage,
    ReportError,
    merge_coverage,
    parse_cobertura,
    parse_junit,
    parse_junit_files,
)

REPORTS = Path(__file__).parent.parent / "fixtures" / "reports"


def write(tmp_path: Path, text: str, name: str = "report.xml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def counts(path: Path) -> tuple[int, int, int, int, int]:
    s = parse_junit(path)
    return s.total, s.passed, s.failed, s.skipped, s.errors


def test_pytest_dialect() -> None:
    summary = parse_junit(REPORTS / "pytest-junit.xml").to_dict()
    assert (summary["total"], summary["passed"], summary["failed"], summary["skipped"],
            summary["errors"]) == (5, 2, 1, 1, 1)
    assert summary["failed_tests"] == [
        {"name": "tests.test_shop::test_discount", "kind": "failure",
         "message": "AssertionError: discount not applied\nassert 100 == 90"},
        {"name": "tests.test_db::test_query", "kind": "error",
         "message": 'failed on setup with "ConnectionError: database is down"'},
    ]
    assert summary["failed_tests_omitted"] == 0


def test_surefire_dialect_counts_flaky_passes_as_passed() -> None:
    summary = parse_junit(REPORTS / "surefire-TEST-com.example.CalculatorTest.xml")
    assert (summary.total, summary.passed, summary.failed, summary.skipped,
            summary.errors) == (5, 2, 1, 1, 1)
    assert [(t.name, t.message, t.kind) for t in summary.failed_tests] == [
        ("com.example.CalculatorTest::dividesByZero", "/ by zero", "error"),
        ("com.example.CalculatorTest::subtracts", "expected: <3> but was: <4>", "failure"),
    ]


def test_jest_dialect_takes_the_message_from_the_text() -> None:
    summary = parse_junit(REPORTS / "jest-junit.xml")
    assert (summary.total, summary.passed, summary.failed, summary.skipped) == (4, 2, 1, 1)
    [failed] = summary.failed_tests
    assert failed.name == "cart applies a coupon"
    assert failed.message == "Error: expect(received).toBe(expected) // Object.is equality"


def test_several_files_add_up() -> None:
    summary = parse_junit_files([REPORTS / "pytest-junit.xml", REPORTS / "jest-junit.xml"])
    assert (summary.total, summary.failed, summary.errors) == (9, 2, 1)
    assert len(summary.failed_tests) == 3


def test_nested_suites_and_missing_attributes(tmp_path: Path) -> None:
    path = write(tmp_path, """<testsuites>
      <testsuite name="outer">
        <testsuite name="inner">
          <testcase name="a"/>
          <testcase><failure/></testcase>
        </testsuite>
        <testcase name="b"><error>Boom happened
          at line 3</error></testcase>
      </testsuite>
      <testsuite><testcase name="c"><skipped/></testcase></testsuite>
    </testsuites>""")
    summary = parse_junit(path)
    assert (summary.total, summary.passed, summary.failed, summary.skipped,
            summary.errors) == (4, 1, 1, 1, 1)
    assert [(t.name, t.message) for t in summary.failed_tests] == [
        ("inner::(unnamed)", ""), ("outer::b", "Boom happened")]


def test_a_bare_testsuite_root_and_namespaced_tags(tmp_path: Path) -> None:
    assert counts(write(tmp_path, '<testsuite name="s"><testcase name="x"/></testsuite>')) == \
        (1, 1, 0, 0, 0)
    assert counts(write(tmp_path, '<j:testsuites xmlns:j="urn:x"><j:testsuite>'
                                  '<j:testcase name="x"><j:failure message="m"/></j:testcase>'
                                  '</j:testsuite></j:testsuites>')) == (1, 0, 1, 0, 0)
    assert counts(write(tmp_path, "<testsuites/>")) == (0, 0, 0, 0, 0)


def test_failure_outranks_error_and_skip_in_one_testcase(tmp_path: Path) -> None:
    path = write(tmp_path, '<testsuite><testcase classname="k" name="t">'
                           '<skipped message="s"/><error message="e"/><failure message="f"/>'
                           '</testcase></testsuite>')
    summary = parse_junit(path)
    assert (summary.failed, summary.errors, summary.skipped) == (1, 0, 0)
    assert summary.failed_tests[0].message == "f"


def test_failed_tests_are_capped_with_a_count(tmp_path: Path) -> None:
    cases = "".join(f'<testcase classname="c" name="t{i}"><failure message="no"/></testcase>'
                    for i in range(150))
    result = parse_junit(write(tmp_path, f"<testsuite>{cases}</testsuite>")).to_dict()
    assert result["failed"] == 150
    assert len(result["failed_tests"]) == 100
    assert result["failed_tests_omitted"] == 50
    assert result["failed_tests"][0]["name"] == "c::t0"


def test_a_long_message_is_cut_and_system_out_is_not_kept(tmp_path: Path) -> None:
    out = "x" * 200_000
    path = write(tmp_path, f'<testsuite><testcase name="t"><failure message="{"m" * 5000}"/>'
                           f"<system-out>{out}</system-out></testcase></testsuite>")
    [failed] = parse_junit(path).failed_tests
    assert failed.message == "m" * 1000


@pytest.mark.parametrize(("text", "words"), [
    ("<testsuite><testcase name='a'>", ["not well-formed XML"]),
    ("", ["not well-formed XML"]),
    ("<html><body/></html>", ["root element is <html>", "JUnit"]),
    ('<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
     '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
     "<testsuite><testcase name='&lol2;'/></testsuite>", ["DOCTYPE", "refused"]),
    ('<!DOCTYPE t SYSTEM "file:///etc/passwd"><testsuite/>', ["DOCTYPE", "refused"]),
])
def test_unreadable_reports_name_the_file(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text, name="junit-broken.xml")
    with pytest.raises(ReportError) as info:
        parse_junit(path, "reports/junit-broken.xml")
    message = str(info.value)
    assert message.startswith("test report 'reports/junit-broken.xml'")
    for word in words:
        assert word in message


def test_cobertura_from_coverage_py() -> None:
    coverage = parse_cobertura(REPORTS / "cobertura-coverage.xml")
    assert coverage.to_dict() == {"percent": 71.3, "lines_valid": 1000, "lines_covered": 713}


def test_cobertura_without_totals_counts_class_lines_once() -> None:
    coverage = parse_cobertura(REPORTS / "cobertura-no-totals.xml")
    assert (coverage.lines_valid, coverage.lines_covered, coverage.percent) == (4, 3, 75.0)


def test_cobertura_with_only_a_line_rate(tmp_path: Path) -> None:
    coverage = parse_cobertura(write(tmp_path, '<coverage line-rate="0.42"/>'))
    assert coverage.percent == pytest.approx(42.0)
    assert parse_cobertura(write(tmp_path, "<coverage/>")).percent == 100.0


def test_cobertura_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match=r"'cov.xml': root element is <testsuite>"):
        parse_cobertura(write(tmp_path, "<testsuite/>"), "cov.xml")
    with pytest.raises(ReportError, match=r"coverage report 'cov.xml' is not well-formed XML"):
        parse_cobertura(write(tmp_path, "<coverage"), "cov.xml")
    with pytest.raises(ReportError, match=r"coverage report 'cov.xml' cannot be read"):
        parse_cobertura(tmp_path / "absent.xml", "cov.xml")


def test_merge_coverage_adds_line_counts() -> None:
    merged = merge_coverage([Coverage(100, 50), Coverage(300, 250)])
    assert merged is not None
    assert (merged.lines_valid, merged.lines_covered, merged.percent) == (400, 300, 75.0)
    assert merge_coverage([]) is None
