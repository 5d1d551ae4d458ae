from __future__ import annotations

import pytest

from ansflow.spec.graph import Dag, Plan, critical_path

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


@pytest.mark.parametrize(("deps", "cycle"), [
    (DIAMOND, None),
    ({"a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
    ({"a": [], "b": ["a", "d"], "c": ["b"], "d": ["c"]}, ["b", "c", "d", "b"]),
    ({"x": ["x"]}, ["x", "x"]),
])
def test_find_cycle_names_the_cycle_in_order(deps: dict[str, list[str]],
                                             cycle: list[str] | None) -> None:
    assert Dag(deps).find_cycle() == cycle


@pytest.mark.parametrize(("deps", "levels"), [
    (DIAMOND, [["a"], ["b", "c"], ["d"]]),
    ({"a": [], "b": [], "c": ["a", "b"], "d": ["a"]}, [["a", "b"], ["c", "d"]]),
    ({"a": [], "b": ["a"], "c": ["a", "b"]}, [["a"], ["b"], ["c"]]),
])
def test_levels(deps: dict[str, list[str]], levels: list[list[str]]) -> None:
    assert Dag(deps).levels() == levels


@pytest.mark.parametrize(("deps", "done", "ready"), [
    ({"a": [], "b": ["a"], "c": ["a"]}, ["a"], {"b", "c"}),
    ({"a": [], "b": ["a"], "c": ["b"]}, ["a"], {"b"}),
    (DIAMOND, ["a", "b"], {"c"}),
    (DIAMOND, ["a", "b", "c"], {"d"}),
])
def test_ready_after(deps: dict[str, list[str]], done: list[str], ready: set[str]) -> None:
    plan = Plan(Dag(deps), completed=done)
    assert set(plan.take_ready(10)) == ready


def test_ready_steps_come_by_order_then_name_and_respect_the_limit() -> None:
    dag = Dag({"z": [], "a": [], "m": [], "late": []}, order={"late": 9, "z": -1})
    plan = Plan(dag)
    assert plan.take_ready(2) == ["z", "a"]
    assert plan.take_ready(5) == ["m", "late"]
    assert plan.take_ready(5) == []


def test_completion_releases_dependents_once() -> None:
    plan = Plan(Dag(DIAMOND))
    assert plan.take_ready(5) == ["a"]
    assert plan.complete("a") == ["b", "c"]
    assert plan.waiting_on("d") == ["b", "c"]
    assert plan.complete("b") == []
    assert plan.complete("c") == ["d"]
    assert plan.complete("c") == []
    assert not plan.finished
    plan.take_ready(5)
    plan.complete("d")
    assert plan.finished


def test_critical_path_and_slack() -> None:
    dag = Dag(DIAMOND)
    path = critical_path(dag, {"a": 1.0, "b": 5.0, "c": 2.0, "d": 1.0})
    assert path.steps == ["a", "b", "d"]
    assert path.duration_seconds == 7.0
    assert path.slack_seconds == {"a": 0.0, "b": 0.0, "c": 3.0, "d": 0.0}


def test_critical_path_of_independent_branches() -> None:
    dag = Dag({"a": [], "b": [], "c": ["b"]})
    path = critical_path(dag, {"a": 4.0, "b": 1.0, "c": 1.0})
    assert path.steps == ["a"]
    assert path.slack_seconds["c"] == 2.0


def test_topological_order_is_linear_for_a_long_chain() -> None:
    deps = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(3000)}
    assert Dag(deps).topological_order() == list(deps)
