"""Parsing limits (PRODUCT.md section 8): size, aliases, nodes after expansion, depth."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from ansflow.errors import DefinitionError, DefinitionTooLarge
from ansflow.spec.limits import MAX_ALIASES, MAX_DEFINITION_BYTES, MAX_DEPTH, MAX_NODES
from ansflow.spec.model import load_document
from tests.builders import parse


def alias_bomb(levels: int = 9, fan_out: int = 8) -> str:
    """``levels`` levels of ``fan_out`` aliases each: 8**9 = 134 million nodes expanded."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels + 1]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(['"lol"'] * fan_out) + "]"]
    for previous, name in itertools.pairwise(names):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * fan_out) + "]")
    return "\n".join(lines) + "\n"


def refused(text: str, content_type: str | None = None) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        load_document(text, content_type)
    return caught.value


def test_the_alias_bomb_stops_at_the_node_limit_at_once() -> None:
    bomb = alias_bomb()
    assert len(bomb.encode()) < 400
    started = time.perf_counter()
    error = refused(bomb)
    elapsed = time.perf_counter() - started
    assert error.status_code == 422
    assert f"more than the limit of {MAX_NODES} nodes" in error.message
    # it stops after about 10,000 counted nodes (well under a millisecond here); the bound
    # is generous for a loaded CI box and still far from the minutes the bomb would take
    assert elapsed < 1.0, elapsed


def test_aliases_are_counted_even_when_they_expand_to_little() -> None:
    many = "x: &x a\nlist: [" + ",".join(["*x"] * MAX_ALIASES) + "]\n"
    assert load_document(many)["list"] == ["a"] * MAX_ALIASES
    error = refused("x: &x a\nlist: [" + ",".join(["*x"] * (MAX_ALIASES + 1)) + "]\n")
    assert f"more than the limit of {MAX_ALIASES} YAML aliases" in error.message
    assert "line 2" in error.message


def test_aliases_and_merge_keys_within_the_limits_still_work() -> None:
    data = load_document("base: &b {image: python, env: {A: 1}}\n"
                         "job:\n  <<: *b\n  name: x\nagain: *b\n")
    assert data["job"] == {"image": "python", "env": {"A": 1}, "name": "x"}
    assert data["again"] == {"image": "python", "env": {"A": 1}}


def test_a_recursive_alias_is_refused() -> None:
    assert "refers to a node that contains it" in refused("a: &a [1, *a]\n").message


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_node_count_includes_every_list_item(content_type: str | None) -> None:
    # the root list is one node: MAX_NODES - 1 items make exactly MAX_NODES nodes
    ok = json.dumps([1] * (MAX_NODES - 1))
    assert len(load_document(ok, content_type)) == MAX_NODES - 1
    error = refused(json.dumps([1] * MAX_NODES), content_type)
    assert f"more than the limit of {MAX_NODES} nodes" in error.message


def test_mapping_keys_count_as_nodes() -> None:
    half = MAX_NODES // 2
    ok = {f"k{i}": 1 for i in range(half - 1)}   # 1 + 2 * (half - 1) nodes
    assert len(load_document(json.dumps(ok))) == half - 1
    assert len(load_document(json.dumps(ok).replace('{"', '{\n "'), "application/yaml")
               ) == half - 1
    too_many = {f"k{i}": 1 for i in range(half)}
    for content_type in ("application/json", "application/yaml"):
        assert "nodes" in refused(json.dumps(too_many), content_type).message


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, 100_000])
@pytest.mark.parametrize("content_type", ["application/yaml", "application/json"])
def test_nesting_depth(depth: int, content_type: str) -> None:
    text = "[" * depth + "]" * depth
    if depth <= MAX_DEPTH:
        assert load_document(text, content_type) is not None
        return
    error = refused(text, content_type)
    assert f"nested deeper than the limit of {MAX_DEPTH} levels" in error.message


def test_an_alias_counts_the_depth_of_what_it_stands_for() -> None:
    deep = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert load_document(f"a: &a {deep}\n")["a"] is not None
    assert "nested deeper" in refused(f"a: &a {deep}\nb: {{c: *a}}\n").message


def test_size_is_counted_in_utf8_bytes() -> None:
    head = "name: p\nsteps: [{name: a, type: custom, config: {script: 'true'}}]\n"
    padding = MAX_DEFINITION_BYTES - len(head) - len("# \n")
    exact = head + "# " + "x" * padding + "\n"
    assert len(exact.encode()) == MAX_DEFINITION_BYTES
    assert parse(exact).name == "p"
    with pytest.raises(DefinitionTooLarge) as caught:
        parse(exact + " ")
    assert caught.value.status_code == 413
    assert caught.value.message == (f"the pipeline definition is {MAX_DEFINITION_BYTES + 1} "
                                    f"bytes; the limit is {MAX_DEFINITION_BYTES} bytes (1 MiB)")
    # fewer characters than the limit, more bytes: "é" is two bytes
    wide = "description: '" + "é" * (MAX_DEFINITION_BYTES // 2) + "'\n"
    assert len(wide) < MAX_DEFINITION_BYTES
    with pytest.raises(DefinitionTooLarge):
        load_document(wide)
    with pytest.raises(DefinitionTooLarge):
        load_document(wide.encode())


def test_a_twenty_megabyte_document_is_refused_before_it_is_parsed() -> None:
    steps = [{"name": f"s{i}", "type": "custom", "config": {"script": "echo " + "x" * 200}}
             for i in range(80_000)]
    big = json.dumps({"name": "big", "steps": steps})
    assert len(big) > 20 * 1024 * 1024
    started = time.perf_counter()
    with pytest.raises(DefinitionTooLarge):
        parse(big)
    # refused by its length alone; parsing it took 13.5 s before the limit existed
    assert time.perf_counter() - started < 0.5
