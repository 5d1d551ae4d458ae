from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansflow.errors import ExpressionError
from ansflow.spec.expr import (
    EvalContext,
    Expression,
    StepView,
    glob_match,
    parse,
    parse_condition,
    render,
    render_value,
    template_expressions,
    truthy,
    walk_strings,
)

ROOTS = "trigger, env, vars, steps, secrets, execution, matrix"

CTX = EvalContext(
    trigger={"ref": "refs/heads/main", "branch": "main", "tag": None, "event": "push",
             "commit": "abc123", "actor": "ana", "paths": ["src/a.py", "docs/b.md"]},
    env={"HOME": "/home/ci"},
    vars={"depth": 3, "ratio": 0.5, "names": ["a", "b"], "flag": True, "empty": "",
          "zero": 0, "nested": {"k": ["x", {"deep": "y"}]}, "proxy": MappingProxyType({"p": 1})},
    steps={"build": StepView("success", {"version": "1.2.3"}),
           "unit-tests": StepView("failure", {}),
           "my.step": StepView("success", {"k": "v"}),
           "1st": StepView("skipped", {})},
    secrets={"TOKEN": "s3cr3t"},
    execution={"id": 42},
)


def ev(source: str, ctx: EvalContext = CTX) -> Any:
    return parse(source).evaluate(ctx)


@pytest.mark.parametrize(("source", "expected"), [
    # literals
    ("'it''s'", "it's"), ('"double"', "double"), ("''", ""), ("42", 42), ("-7", -7),
    ("1.5", 1.5), ("2e3", 2000.0), ("true", True), ("false", False), ("null", None),
    ("['a', 1, null]", ["a", 1, None]), ("[]", []), ("['a',]", ["a"]),
    # roots and access
    ("trigger.ref", "refs/heads/main"), ("trigger['branch']", "main"), ("env.HOME", "/home/ci"),
    ("vars.depth", 3), ("vars.names[1]", "b"), ("vars.nested.k[1].deep", "y"),
    ("vars['nested']['k'][0]", "x"), ("secrets.TOKEN", "s3cr3t"), ("execution.id", 42),
    ("vars.proxy.p", 1), ("steps.build.status", "success"), ("steps.unit-tests.status", "failure"),
    ("steps['my.step'].outputs.k", "v"), ("steps.build.outputs.version", "1.2.3"),
    ("steps.1st.status", "skipped"), ("( trigger ) . ref", "refs/heads/main"),
    # missing keys are null, never an error
    ("vars.missing", None), ("vars.missing.deeper[3].x", None), ("steps.nope.status", None),
    ("steps.build.outputs.nope", None), ("vars.names[5]", None), ("vars.names[-1]", None),
    ("vars.names['0']", None), ("vars.names.0", None), ("trigger.ref.x", None),
    ("vars[vars.names]", None), ("trigger.__class__", None), ("steps.build.__dict__", None),
    ("'abc'[0]", None), ("vars.names[true]", None),
    # equality: no coercion except int/float, case-sensitive strings
    ("1 == 1.0", True), ("'1' == 1", False), ("true == 1", False), ("0 == false", False),
    ("null == false", False), ("null == ''", False), ("null == null", True),
    ("'Main' == 'main'", False), ("'main' == 'main'", True), ("'a' != 'b'", True),
    ("1 != 1", False), ("vars.missing == 'x'", False), ("vars.missing != 'x'", True),
    ("vars.missing == null", True), ("[1, 'a'] == [1.0, 'a']", True), ("[1] == [true]", False),
    ("[1] == [1, 2]", False), ("vars.nested == vars.nested", True),
    ("vars.proxy == trigger", False),
    # ordering: false for mismatched or null operands
    ("1 < 2", True), ("2 <= 2", True), ("3 > 2.5", True), ("2 >= 3", False),
    ("'a' < 'b'", True), ("'B' < 'a'", True), ("1 < 'a'", False), ("'a' > 1", False),
    ("vars.missing < 1", False), ("vars.missing >= null", False), ("true > false", False),
    ("[1] < [2]", False),
    # in / not in
    ("'a' in vars.names", True), ("'c' in vars.names", False), ("'c' not in vars.names", True),
    ("'ref' in trigger", True), ("'nope' in trigger", False), ("'heads' in trigger.ref", True),
    ("'x' in vars.missing", False), ("'x' not in vars.missing", True), ("1 in [1.0, 2]", True),
    ("1 in ['1']", False), ("1 in 'a1'", False), ("vars.names in trigger", False),
    # boolean operators give an operand, GitHub style
    ("vars.missing || 'latest'", "latest"), ("vars.depth or 'x'", 3), ("'' or 0", 0),
    ("vars.flag && 'yes'", "yes"), ("vars.zero and 'no'", 0), ("not vars.empty", True),
    ("!vars.flag", False), ("not not vars.depth", True), ("!!!true", False),
    # precedence: or < and < not < comparison < access
    ("true or false and false", True), ("(true or false) and false", False),
    ("false and false or true", True), ("not false and false", False),
    ("not 1 == 2", True), ("not 'a' in vars.names", False), ("'a' not in vars.names or true", True),
    ("! true || true", True), ("false && false || true", True),
    ("trigger.ref == 'refs/heads/main' and steps.build.status == 'success'", True),
    ("not (true and false)", True),
])
def test_evaluate(source: str, expected: Any) -> None:
    result = ev(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(("source", "expected"), [
    ("startswith(trigger.ref, 'refs/heads/')", True),
    ("startsWith(trigger.ref, 'refs/tags/')", False),
    ("startswith(vars.missing, '')", False), ("startswith(vars.depth, '3')", False),
    ("endswith(trigger.ref, '/main')", True), ("endswith('abc', 'B')", False),
    ("contains(trigger.ref, 'heads')", True), ("contains(vars.names, 'b')", True),
    ("contains(vars.names, 'z')", False), ("contains(vars.missing, 'z')", False),
    ("contains(trigger, 'ref')", False), ("contains([1, 2], 2.0)", True),
    ("matches(trigger.ref, 'refs/heads/*')", True), ("matches(trigger.branch, 'release/*')", False),
    ("matches(vars.missing, '**')", False),
    ("format('{0}-{1}', 'a', vars.depth)", "a-3"), ("format('{{{0}}}', 'x')", "{x}"),
    ("format('{1}{0}', true, null)", "true"), ("format('{5}', 1)", "{5}"),
    ("format('{0}', vars.names)", '["a","b"]'), ("format(vars.missing)", ""),
    ("format('{99999999}', 1)", "{99999999}"),
    ("join(vars.names, ', ')", "a, b"), ("join(vars.names)", "a,b"), ("join('solo', '-')", "solo"),
    ("join(vars.missing)", ""), ("join([1, true, null], '|')", "1|true|"),
    ("tojson(vars.nested)", '{"k":["x",{"deep":"y"}]}'), ("toJSON('x')", '"x"'),
    ("tojson(steps.build)", '{"status":"success","outputs":{"version":"1.2.3"}}'),
    ("tojson(vars.missing)", "null"), ("tojson(vars.proxy)", '{"p":1}'),
])
def test_functions(source: str, expected: Any) -> None:
    assert ev(source) == expected


@pytest.mark.parametrize(("ctx", "expected"), [
    (EvalContext(),
     {"success()": True, "failure()": False, "cancelled()": False, "always()": True}),
    (EvalContext(success=False, failure=True),
     {"success()": False, "failure()": True, "cancelled()": False, "always()": True}),
    (EvalContext(success=False, cancelled=True),
     {"success()": False, "failure()": False, "cancelled()": True, "always()": True}),
])
def test_status_functions_read_the_context(ctx: EvalContext, expected: dict[str, bool]) -> None:
    assert {source: ev(source, ctx) for source in expected} == expected


@pytest.mark.parametrize(("value", "pattern", "expected"), [
    ("main", "main", True), ("main", "mai", False), ("release/1.2", "release/*", True),
    ("release/1/2", "release/*", False), ("release/1/2", "release/**", True),
    ("release/", "release/*", True), ("src/a/b/c.py", "src/**/*.py", True),
    ("src/c.py", "src/**/*.py", True), ("src/c.pyc", "src/**/*.py", False),
    ("a.js", "**/*.js", True), ("x/y/a.js", "**/*.js", True), ("v1", "v?", True),
    ("v12", "v?", False), ("a/b", "a?b", False), ("feature.x", "feature.*", True),
    ("featureAx", "feature.x", False), ("a+b(c)", "a+b(c)", True), ("[x]", "[x]", True),
    ("x", "[x]", False), ("line\nbreak", "line*", True), ("anything/at/all", "**", True),
])
def test_glob_match(value: str, pattern: str, expected: bool) -> None:
    assert glob_match(value, pattern) is expected
    assert ev(f"matches('{value}', '{pattern}')") is expected


@pytest.mark.parametrize(("value", "expected"), [
    (None, False), (False, False), (0, False), (0.0, False), ("", False), ([], False),
    ({}, False), ((), False), (MappingProxyType({}), False), (True, True), (1, True),
    (-0.5, True), ("false", True), ("0", True), ([0], True), ({"a": None}, True),
    (StepView("failure"), True),
])
def test_truthy(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


@pytest.mark.parametrize(("source", "refs", "status", "roots"), [
    ("steps.build.status == 'success'", {"build"}, set(), {"steps"}),
    ("steps['my.step'].outputs.k and steps.unit-tests.status", {"my.step", "unit-tests"}, set(),
     {"steps"}),
    ("always() and contains(steps.a.outputs.x, trigger.ref)", {"a"}, {"always"},
     {"steps", "trigger"}),
    ("failure() || cancelled()", set(), {"failure", "cancelled"}, set()),
    ("steps[vars.name].status", set(), set(), {"steps", "vars"}),
    ("steps", set(), set(), {"steps"}),
    ("format('{0}', [steps.x, env.A, secrets.B, execution.c])", {"x"}, set(),
     {"steps", "env", "secrets", "execution"}),
    ("Success()", set(), {"success"}, set()),
])
def test_static_analysis(source: str, refs: set[str], status: set[str], roots: set[str]) -> None:
    parsed = parse(source)
    assert parsed.step_refs == refs
    assert parsed.status_functions == status
    assert parsed.roots == roots


@pytest.mark.parametrize(("text", "status", "refs"), [
    ("trigger.ref == 'refs/heads/main'", {"success"}, set()),
    ("${{ trigger.ref == 'refs/heads/main' }}", {"success"}, set()),
    ("always()", {"always"}, set()),
    ("failure() && steps.build.status == 'failure'", {"failure"}, {"build"}),
    ("  ${{ cancelled() }}  ", {"cancelled"}, set()),
    ("steps.a.status == 'skipped'", {"success"}, {"a"}),
])
def test_parse_condition_status_functions(text: str, status: set[str], refs: set[str]) -> None:
    parsed = parse_condition(text)
    assert parsed.status_functions == status
    assert parsed.step_refs == refs
    assert parsed.source == text


@pytest.mark.parametrize(("text", "ctx", "expected"), [
    ("trigger.ref == 'refs/heads/main'", CTX, True),
    ("trigger.ref == 'refs/heads/main'", EvalContext(trigger={"ref": "refs/heads/main"},
                                                     success=False, failure=True), False),
    ("true", EvalContext(success=False, cancelled=True), False),
    ("always()", EvalContext(success=False, failure=True), True),
    ("failure()", EvalContext(success=False, failure=True), True),
    ("failure()", EvalContext(), False),
    ("success() || vars.force", EvalContext(success=False, vars={"force": True}), True),
    ("${{ vars.missing }}", CTX, False),
])
def test_condition_implies_success(text: str, ctx: EvalContext, expected: bool) -> None:
    assert truthy(parse_condition(text).evaluate(ctx)) is expected


@pytest.mark.parametrize(("text", "message", "position"), [
    ("", "empty expression", 0),
    ("   ", "empty expression", 0),
    ("success())", "unexpected token ')'", 9),
    ("sucess()", "unknown function 'sucess' (did you mean 'success'?)", 0),
    ("frobnicate(1)", "unknown function 'frobnicate'", 0),
    ("foo.bar", f"unknown name 'foo' (expected {ROOTS})", 0),
    ("trigger.ref == github.ref",
     f"unknown name 'github' (expected {ROOTS})", 15),
    ("success", "'success' is a function: write success()", 0),
    ("'abc", "unterminated string", 0),
    ("trigger.ref == 'it''s", "unterminated string", 15),
    ("trigger.ref ==", "unexpected end of expression", 14),
    ("(trigger.ref", "expected ')' to close '(', found end of expression", 12),
    ("vars.names[0", "expected ']' to close '[', found end of expression", 12),
    ("[1, 2", "expected ']' to close the list, found end of expression", 5),
    ("startswith('a' 'b')", "expected ')' after the arguments of startswith(), found \"'b'\"", 15),
    ("startswith('a')", "startswith() takes 2 arguments, got 1", 0),
    ("success(1)", "success() takes no arguments, got 1", 0),
    ("format()", "format() takes at least 1 argument, got 0", 0),
    ("join(1, 2, 3)", "join() takes 1 to 2 arguments, got 3", 0),
    ("1 + 2", "unexpected character '+'", 2),
    ("vars.a == == 1", "unexpected token '=='", 10),
    ("1 == 2 == 3", "unexpected token '=='", 7),
    ("trigger.", "expected a property name after '.'", 8),
    ("trigger.'ref'", "expected a property name after '.'", 8),
    ("and", "unexpected token 'and'", 0),
    ("not", "unexpected end of expression", 3),
    ("in vars.x", "unexpected token 'in'", 0),
    ("vars.x not", "unexpected token 'not'", 7),
    ("f(,)", "unknown function 'f'", 0),
    ("join(,)", "unexpected token ','", 5),
    ("1" * 80, "number literal is too long", 0),
    ("(" * 40 + "1" + ")" * 40, "expression is nested too deeply", 32),
    ("trigger.ref == $x", "unexpected character '$'", 15),
    ("__import__('os').system('id')", "unknown function '__import__'", 0),
    ("exec('print(1)')", "unknown function 'exec'", 0),
    ("eval('1')", "unknown function 'eval'", 0),
    ("open('/etc/passwd')", "unknown function 'open'", 0),
    ("lambda: 1", "unexpected character ':'", 6),
    ("lambda", f"unknown name 'lambda' (expected {ROOTS})", 0),
    ("().__class__", "unexpected token ')'", 1),
    ("trigger.__class__.__mro__()", "unexpected token '('", 25),
])
def test_parse_errors(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert caught.value.position == position
    assert caught.value.message == f"{message} (at position {position})"


@pytest.mark.parametrize(("text", "message", "position"), [
    ("${{ trigger.ref", "unclosed '${{' (no matching '}}')", 0),
    ("ref: ${{ trigger.ref }} and ${{ vars.x", "unclosed '${{' (no matching '}}')", 28),
    ("a ${{ foo }}", "unknown name 'foo'", 6),
    ("x ${{ 'abc }}", "unterminated string", 6),
    ("${{ }}", "empty expression", 3),
    ("${{ success()) }}", "unexpected token ')'", 13),
])
def test_template_errors(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as caught:
        template_expressions(text)
    assert caught.value.position == position
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(("text", "sources"), [
    ("no expressions", []),
    ("${{ trigger.ref }}", [" trigger.ref "]),
    ("${{vars.a}}-${{ vars.b }}/${{ format('}}{0}', 'x') }}",
     ["vars.a", " vars.b ", " format('}}{0}', 'x') "]),
    ("$ {{ not one }} ${ {", []),
])
def test_template_expressions(text: str, sources: list[str]) -> None:
    found = template_expressions(text)
    assert all(isinstance(parsed, Expression) for parsed in found)
    assert [parsed.source for parsed in found] == sources


@pytest.mark.parametrize(("template", "expected"), [
    ("plain", "plain"),
    ("${{ trigger.ref }}", "refs/heads/main"),
    ("ref=${{ trigger.ref }} depth=${{ vars.depth }}", "ref=refs/heads/main depth=3"),
    ("[${{ vars.missing }}]", "[]"),
    ("${{ vars.flag }}/${{ 1 == 2 }}", "true/false"),
    ("r=${{ vars.ratio }}", "r=0.5"),
    ("${{ vars.names }} ${{ vars.nested }}", '["a","b"] {"k":["x",{"deep":"y"}]}'),
    ("v${{ steps.build.outputs.version }}-${{ steps.unit-tests.status }}", "v1.2.3-failure"),
    ("${{ vars.tag || 'latest' }}", "latest"),
    ("${{ format('{{0}}={0}', 1) }}", "{0}=1"),
    ("${{ 'a}}b' }}", "a}}b"),
])
def test_render(template: str, expected: str) -> None:
    assert render(template, CTX) == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("${{ vars.depth }}", 3),
    ("  ${{ vars.ratio }}\n", 0.5),
    ("${{ vars.flag }}", True),
    ("${{ vars.missing }}", None),
    ("${{ vars.names }}", ["a", "b"]),
    ("${{ vars.proxy }}", {"p": 1}),
    ("${{ steps.build }}", {"status": "success", "outputs": {"version": "1.2.3"}}),
    ("x${{ vars.depth }}", "x3"),
    ("${{ vars.depth }}${{ vars.depth }}", "33"),
    ({"depth": "${{ vars.depth }}", "ref": "r=${{ trigger.ref }}", "n": 5, "b": None},
     {"depth": 3, "ref": "r=refs/heads/main", "n": 5, "b": None}),
    (["${{ vars.flag }}", ["${{ env.HOME }}/x", 1.5]], [True, ["/home/ci/x", 1.5]]),
    (("${{ vars.zero }}",), [0]),
    (7, 7),
])
def test_render_value_keeps_the_type_of_a_lone_expression(value: Any, expected: Any) -> None:
    result = render_value(value, CTX)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(("value", "expected"), [
    ("one", ["one"]),
    ({"a": "x", "b": ["y", {"c": "z", "d": 1}], "e": None, "f": ("t",)}, ["x", "y", "z", "t"]),
    ([1, 2.0, True], []),
    ({"key-not-visited": 1}, []),
])
def test_walk_strings(value: Any, expected: list[str]) -> None:
    assert list(walk_strings(value)) == expected


def test_parse_is_cached_and_expressions_are_immutable() -> None:
    parsed = parse("vars.x == 1")
    assert parse("vars.x == 1") is parsed
    with pytest.raises(AttributeError):
        parsed.source = "other"  # type: ignore[misc]


# Properties: arbitrary text never makes the parser fail with anything but ExpressionError,
# and any well-formed expression evaluates on any context without raising.

_TOKENS = ["trigger", "vars", "steps", "env", "x", ".", "[", "]", "(", ")", ",", "'s'", '"',
           "'", "==", "!=", "<", ">=", "in", "not", "and", "or", "&&", "||", "!", "1", "-2.5e3",
           "null", "true", "success", "format", "contains", "${{", "}}", "unit-tests", " "]


def _check_parse(text: str) -> None:
    try:
        assert isinstance(parse(text), Expression)
    except ExpressionError as exc:
        assert exc.position is not None and 0 <= exc.position <= len(text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join)))
def test_parse_never_raises_anything_else(text: str) -> None:
    _check_parse(text)
    try:
        template_expressions(text)
        parse_condition(text)
    except ExpressionError:
        pass


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_LEAVES = st.one_of(
    st.text(max_size=8).map(_quote),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["true", "false", "null", "trigger", "trigger.ref", "vars.a", "vars.a.b[0]",
                     "steps", "steps.build.status", "steps['my.step'].outputs.k", "env.HOME",
                     "secrets.T", "execution", "success()", "failure()", "always()",
                     "cancelled()"]),
)
_BINARY = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or", "&&", "||"]


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, st.sampled_from(_BINARY), children)
        .map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        children.map(lambda c: f"(not ({c}))"),
        children.map(lambda c: f"({c})[{c}]"),
        st.lists(children, max_size=3).map(lambda cs: "[" + ", ".join(cs) + "]"),
        st.tuples(st.sampled_from(["startswith", "endswith", "contains", "matches", "join"]),
                  children, children).map(lambda t: f"{t[0]}({t[1]}, {t[2]})"),
        st.lists(children, min_size=1, max_size=3).map(lambda cs: f"format({', '.join(cs)})"),
        children.map(lambda c: f"tojson({c})"),
    )


_EXPRESSIONS = st.recursive(_LEAVES, _combine, max_leaves=12)
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                     max_leaves=8)
_CONTEXTS = st.builds(
    EvalContext,
    trigger=st.dictionaries(st.sampled_from(["ref", "tag", "x"]), _JSON, max_size=3),
    vars=st.dictionaries(st.sampled_from(["a", "b"]), _JSON, max_size=2),
    steps=st.dictionaries(st.sampled_from(["build", "my.step"]),
                          st.builds(StepView, st.text(max_size=5),
                                    st.dictionaries(st.sampled_from(["k"]), st.text(max_size=3))),
                          max_size=2),
    execution=st.dictionaries(st.text(max_size=3), _JSON, max_size=2),
    success=st.booleans(), failure=st.booleans(), cancelled=st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(_EXPRESSIONS, _CONTEXTS)
def test_valid_expressions_evaluate_on_any_context(source: str, ctx: EvalContext) -> None:
    parsed = parse(source)
    value = parsed.evaluate(ctx)
    assert isinstance(truthy(value), bool)
    assert isinstance(render("${{ " + source + " }}", ctx), str)
    assert isinstance(truthy(parse_condition(source).evaluate(ctx)), bool)
