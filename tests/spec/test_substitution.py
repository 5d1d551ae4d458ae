"""How config fields are rendered by their kind, and what the definition check refuses."""

from __future__ import annotations

from typing import Any

import pytest

from ansflow.errors import DefinitionError
from ansflow.spec import expr
from ansflow.spec.substitution import (
    ConfigPath,
    FieldKind,
    SubstitutionError,
    kind_for,
    substitute,
)
from tests.builders import parse

KINDS = {"script": FieldKind.BASH, "py": FieldKind.PYTHON, "remote": FieldKind.REMOTE_SHELL,
         "args[]": FieldKind.ARGUMENT, "dir": FieldKind.PATH, "shell": FieldKind.FIXED,
         "scanners[].command": FieldKind.SH, "set.*": FieldKind.TEXT}
CTX = expr.EvalContext(vars={"x": "a'b $(c)", "n": "7", "dash": "--all", "up": "../..",
                             "num": 3})


def kind_of(path: ConfigPath) -> FieldKind:
    return kind_for(KINDS, path)


@pytest.mark.parametrize(("path", "kind"), [
    (("script",), FieldKind.BASH), (("args", 0), FieldKind.ARGUMENT),
    (("args",), FieldKind.TEXT), (("scanners", 2, "command"), FieldKind.SH),
    (("scanners", "x", "command"), FieldKind.TEXT), (("set", "image.tag"), FieldKind.TEXT),
    (("other",), FieldKind.TEXT), (("script", "deeper"), FieldKind.TEXT),
])
def test_patterns_name_fields_list_items_and_any_key(path: ConfigPath,
                                                     kind: FieldKind) -> None:
    assert kind_for(KINDS, path) == kind


def test_scripts_get_references_and_the_values_go_to_the_environment() -> None:
    done = substitute({"script": 'echo "${{ vars.x }}" ${{ vars.x }}',
                       "py": "print(${{ vars.n }})",
                       "scanners": [{"command": "echo '${{ vars.n }}'"}],
                       "set": {"k": "${{ vars.num }}"}, "dir": "out/${{ vars.n }}"},
                      kind_of, CTX)
    assert done.config == {
        "script": 'echo "${ANSFLOW_EXPR_1}" "$ANSFLOW_EXPR_2"',
        "py": 'print((__import__("os").environ["ANSFLOW_EXPR_3"]))',
        "scanners": [{"command": "echo ''\"$ANSFLOW_EXPR_4\"''"}],
        "set": {"k": 3}, "dir": "out/7"}
    assert done.env == {"ANSFLOW_EXPR_1": "a'b $(c)", "ANSFLOW_EXPR_2": "a'b $(c)",
                        "ANSFLOW_EXPR_3": "7", "ANSFLOW_EXPR_4": "7"}
    assert done.shown[done.config["script"]] == "echo \"a'b $(c)\" a'b $(c)"


def test_a_remote_command_carries_its_values_quoted_in_front() -> None:
    done = substitute({"remote": "echo ${{ vars.x }}"}, kind_of, CTX)
    assert done.config["remote"] == "ANSFLOW_EXPR_1='a'\"'\"'b $(c)'\necho \"$ANSFLOW_EXPR_1\""
    assert done.env == {}
    assert done.shown[done.config["remote"]] == "echo a'b $(c)"


@pytest.mark.parametrize(("config", "message"), [
    ({"script": "echo $(( ${{ vars.x }} ))"},
     "config.script: expression 1 stands in shell arithmetic"),
    ({"args": ["${{ vars.dash }}"]}, "config.args[0]: the value '--all' starts with '-'"),
    ({"dir": "a/${{ vars.up }}/b"}, "config.dir: the value 'a/../../b' steps out with '..'"),
    ({"shell": "${{ vars.n }}"}, "config.shell: must be written out"),
    ({"script": "echo ${{ vars.z }}"}, None),
])
def test_values_that_cannot_go_where_they_stand_fail_the_step(config: dict[str, Any],
                                                              message: str | None) -> None:
    ctx = expr.EvalContext(vars={**CTX.vars, "z": "a\x00b"})
    with pytest.raises(SubstitutionError) as caught:
        substitute(config, kind_of, ctx)
    assert caught.value.message.startswith(message or "config.script: a value holds a NUL")
    assert caught.value.status_code == 422


def test_values_that_are_fine_as_data() -> None:
    done = substitute({"args": ["--level=${{ vars.dash }}", "${{ vars.n }}"],
                       "dir": "../${{ vars.n }}", "script": "echo $(( ${{ vars.n }} ))"},
                      kind_of, CTX)
    assert done.config["args"] == ["--level=--all", "7"]
    assert done.config["dir"] == "../7"


def test_the_definition_check_names_step_and_field() -> None:
    doc = {"name": "p", "steps": [
        {"name": "gen", "type": "custom",
         "config": {"script": "cat > f <<'EOF'\nversion ${{ vars.v }}\nEOF"}},
        {"name": "py", "type": "custom",
         "config": {"shell": "python", "script": "open('f', 'wb').write(b'${{ vars.v }}')"}},
        {"name": "pick", "type": "custom", "config": {"shell": "${{ vars.s }}",
                                                       "script": "true"}},
        {"name": "dep", "type": "deploy", "config": {
            "target": "ssh", "environment": "e", "host": "h", "remote_path": "/r",
            "command": "cat <<'X'\n${{ vars.v }}\nX"}},
        {"name": "ok", "type": "custom", "config": {"script": "cat <<EOF\n${{ vars.v }}\nEOF"}},
    ]}
    with pytest.raises(DefinitionError) as caught:
        parse(doc)
    found = {(d.step, d.field) for d in caught.value.details}
    assert found == {("gen", "config.script"), ("py", "config.script"),
                     ("pick", "config.shell"), ("dep", "config.command")}
    assert "quoted delimiter ('EOF')" in str(caught.value)
