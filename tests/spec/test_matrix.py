"""Matrix expansion (GitHub Actions' include/exclude rules), instance names and the
definition errors that name the matrix step."""

from __future__ import annotations

from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.spec.matrix import combinations, instance_name, plan_steps
from ansflow.spec.model import MatrixSpec
from tests.builders import parse


def doc(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "p", "steps": list(steps)}


def s(name: str, script: str = "true", **fields: Any) -> dict[str, Any]:
    return {"name": name, "type": "custom", "config": {"script": script}, **fields}


TWO_BY_THREE = {
    "axes": {"python": ["3.11", "3.12"], "os": ["a", "b", "c"]},
    "exclude": [{"python": "3.12", "os": "c"}],
    "include": [{"python": "3.11", "os": "a", "experimental": True},
                {"python": "3.13", "os": "a"}],
}


@pytest.mark.parametrize(("matrix", "expected"), [
    ({"axes": {"x": [1, 2]}}, [{"x": 1}, {"x": 2}]),
    ({"axes": {"a": ["p", "q"], "b": [1, 2]}},
     [{"a": "p", "b": 1}, {"a": "p", "b": 2}, {"a": "q", "b": 1}, {"a": "q", "b": 2}]),
    # exclude matches on every key it names, partially
    ({"axes": {"a": ["p", "q"], "b": [1, 2]}, "exclude": [{"a": "q"}]},
     [{"a": "p", "b": 1}, {"a": "p", "b": 2}]),
    # include adds keys to every combination it does not contradict
    ({"axes": {"a": ["p", "q"]}, "include": [{"extra": "x"}]},
     [{"a": "p", "extra": "x"}, {"a": "q", "extra": "x"}]),
    ({"axes": {"a": ["p", "q"]}, "include": [{"a": "q", "extra": "x"}]},
     [{"a": "p"}, {"a": "q", "extra": "x"}]),
    # an include that fits no combination is a combination of its own
    ({"axes": {"a": ["p"]}, "include": [{"a": "z"}]}, [{"a": "p"}, {"a": "z"}]),
    # an excluded combination comes back only through an include
    ({"axes": {"a": ["p", "q"]}, "exclude": [{"a": "q"}], "include": [{"a": "q"}]},
     [{"a": "p"}, {"a": "q"}]),
    # values added by an include may be overwritten by a later one, axis values never
    ({"axes": {"a": ["p"]}, "include": [{"c": 1}, {"c": 2}, {"a": "p", "c": 3}]},
     [{"a": "p", "c": 3}]),
    # kinds matter: the string "1" is not the number 1, true is not 1
    ({"axes": {"a": ["1", 1]}, "exclude": [{"a": 1}]}, [{"a": "1"}]),
    ({"axes": {"a": [True, 1]}, "exclude": [{"a": True}]}, [{"a": 1}]),
    ({"include": [{"a": 1}, {"a": 2}]}, [{"a": 1}, {"a": 2}]),
])
def test_combinations(matrix: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert combinations(MatrixSpec.model_validate(matrix)) == expected


def test_a_two_by_three_matrix_with_an_exclude_and_an_include() -> None:
    spec = parse(doc(s("test", "echo ${{ matrix.python }}", matrix=TWO_BY_THREE),
                                s("after", depends_on=["test"])))
    planned = plan_steps(spec)
    instances = {p.name: dict(p.values) for p in planned if p.matrix_of == "test"}
    assert instances == {
        "test-3.11-a": {"python": "3.11", "os": "a", "experimental": True},
        "test-3.11-b": {"python": "3.11", "os": "b"},
        "test-3.11-c": {"python": "3.11", "os": "c"},
        "test-3.12-a": {"python": "3.12", "os": "a"},
        "test-3.12-b": {"python": "3.12", "os": "b"},
        "test-3.13-a": {"python": "3.13", "os": "a"},
    }
    after = next(p for p in planned if p.name == "after")
    assert after.spec.depends_on == list(instances)
    assert all(p.spec.matrix is None for p in planned)


@pytest.mark.parametrize(("values", "keys", "name"), [
    ({"python": "3.11", "os": "a"}, ["python", "os"], "test-3.11-a"),
    ({"os": "ubuntu latest", "v": "1/2"}, ["os", "v"], "test-ubuntu_latest-1_2"),
    ({"flag": True, "n": 3.5}, ["flag", "n"], "test-true-3.5"),
    ({"empty": ""}, ["empty"], "test-_"),
])
def test_instance_names_are_url_safe(values: dict[str, Any], keys: list[str],
                                     name: str) -> None:
    assert instance_name("test", values, keys) == name


def test_a_long_name_ends_in_a_stable_digest() -> None:
    values = {"os": "x" * 80}
    first = instance_name("test", values, ["os"])
    assert len(first) == 64 and first.startswith("test-xxx")
    assert first == instance_name("test", dict(values), ["os"])
    assert first != instance_name("test", {"os": "x" * 81}, ["os"])


@pytest.mark.parametrize(("step", "field", "message"), [
    (s("t", matrix={"axes": {"x": list(range(257))}}), "matrix",
     "the matrix has 257 instances; at most 256 are allowed"),
    (s("t", matrix={"axes": {"x": list(range(100)), "y": list(range(100))}}), "matrix",
     "the axes give 10000 combinations"),
    (s("t", matrix={"axes": {"x": [1, "1"]}}), "matrix",
     "matrix instance name 't-1' is not unique"),
    (s("t", matrix={"axes": {"x": []}}), "matrix", "axis 'x' has no values"),
    (s("t", matrix={"axes": {"x": [1]}, "exclude": [{"y": 1}]}), "matrix",
     "exclude names 'y', which is not an axis"),
    (s("t", matrix={}), "matrix", "a matrix needs 'axes' or 'include'"),
    (s("t", matrix={"axes": {"bad key": [1]}}), "matrix.axes.bad key.[key]", "should match"),
    (s("t", matrix={"axes": {"x": [[1]]}}), "matrix.axes.x[0]",
     "a matrix value is a string, a number or a boolean"),
    (s("t", "echo ${{ matrix.y }}", matrix={"axes": {"x": [1]}}), "config.script",
     "unknown matrix key 'y' (the matrix has: x)"),
    (s("t", "echo ${{ matrix.x }}"), "config.script",
     "matrix.* is only defined in a step with a 'matrix'"),
    (s("t", when="matrix.x == 1"), "when", "matrix.* is only defined in a step"),
])
def test_matrix_errors_name_the_step_and_field(step: dict[str, Any], field: str,
                                               message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(doc(step))
    details = [(d.step, d.field, d.message) for d in caught.value.details]
    assert any(d[0] == "t" and d[1] == field and message in d[2] for d in details), details


def test_an_instance_name_may_not_clash_with_another_step() -> None:
    with pytest.raises(DefinitionError) as caught:
        parse(doc(s("t", matrix={"axes": {"x": ["a"]}}), s("t-a")))
    assert [(d.step, d.field) for d in caught.value.details] == [("t", "matrix")]


def test_expressions_may_read_the_matrix_step_and_its_instances() -> None:
    spec = parse(doc(
        s("t", matrix={"axes": {"x": ["a", "b"]}, "include": [{"x": "a", "extra": 1}]},
          when="matrix.extra == 1 or matrix.x == 'b'"),
        s("u", "echo ${{ steps.t.status }} ${{ steps['t-a'].outputs.v }}",
          depends_on=["t"])))
    assert [p.name for p in plan_steps(spec)] == ["t-a", "t-b", "u"]
