"""How ``${{ }}`` reaches each config field of a step (PRODUCT.md section 8).

Every step type says what each of its config fields becomes (``StepType.substitution``);
a field it does not list is ``TEXT``. By kind:

- ``BASH``, ``SH``: a script a shell runs. Each expression becomes a reference to a
  variable ``ANSFLOW_EXPR_<n>`` set in the step's environment (``spec/shell_subst.py``).
- ``PYTHON``: a Python script; each expression reads such a variable
  (``spec/python_subst.py``).
- ``REMOTE_SHELL``: a command a shell on another host runs (``ssh``): the same
  references, with the variables assigned, shell-quoted, in front of the command.
- ``ARGUMENT``: a word a tool reads options from; a value may not make it start with
  ``-`` (``--upload-pack=...``) when the definition did not.
- ``PATH``: like ``ARGUMENT``, and a value may not add a ``..`` step.
- ``FIXED``: decides how the other fields are read (``custom.shell``), or who may
  decide an approval and for how long; no expressions.
- ``TEXT``: anything else (messages, URLs, names): rendered as text, which is data.

The log shows a script as it would read with the values pasted in (``shown``); what
runs is the script with references. Pure: no I/O.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from ansflow.errors import AnsFlowError, ExpressionError
from ansflow.spec import expr
from ansflow.spec.python_subst import python_text
from ansflow.spec.shell_subst import UnsafePlacement, placements, shell_text

ConfigPath = tuple[str | int, ...]
VARIABLE_PREFIX = "ANSFLOW_EXPR_"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_PATTERN_PART = re.compile(r"\[\]|[^.\[\]]+")


class FieldKind(StrEnum):
    TEXT = "text"
    ARGUMENT = "argument"
    PATH = "path"
    BASH = "bash"
    SH = "sh"
    PYTHON = "python"
    REMOTE_SHELL = "remote_shell"
    FIXED = "fixed"


SCRIPTS = frozenset({FieldKind.BASH, FieldKind.SH, FieldKind.PYTHON, FieldKind.REMOTE_SHELL})
KindOf = Callable[[ConfigPath], FieldKind]


class SubstitutionError(AnsFlowError):
    """A value cannot go where its expression stands; the message names the field."""

    code, status_code = "invalid_config", 422


@dataclass(slots=True)
class Substituted:
    config: Any
    env: dict[str, str] = field(default_factory=dict)
    """``ANSFLOW_EXPR_<n>``: the values the scripts refer to."""
    shown: dict[str, str] = field(default_factory=dict)
    """Script as run -> the script as the log shows it (values pasted in)."""


def field_name(path: ConfigPath) -> str:
    return "config" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def kind_for(patterns: Mapping[str, FieldKind], path: ConfigPath) -> FieldKind:
    """The kind of the first pattern (``a.b``, ``a[].b``, ``a.*``) matching ``path``."""
    for pattern, kind in patterns.items():
        parts = _PATTERN_PART.findall(pattern)
        if len(parts) == len(path) and all(_part_matches(p, key)
                                           for p, key in zip(parts, path, strict=True)):
            return kind
    return FieldKind.TEXT


def _part_matches(pattern: str, key: str | int) -> bool:
    if isinstance(key, int):
        return pattern == "[]"
    return pattern in ("*", key)


def strings(value: Any, path: ConfigPath = ()) -> Iterator[tuple[ConfigPath, str]]:
    """Every string inside nested mappings and lists, with its path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from strings(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from strings(item, (*path, index))


def template_problem(template: str, kind: FieldKind) -> str | None:
    """Why ``template`` cannot be a ``kind`` field whatever the values (definition check)."""
    if "${{" not in template:
        return None
    if kind is FieldKind.FIXED:
        return ("must be written out: an expression cannot decide how the step reads its "
                "other fields, nor who may approve it")
    if kind not in SCRIPTS:
        return None
    try:
        literal = [p if isinstance(p, str) else None for p in expr.template_parts(template)]
        names = [f"{VARIABLE_PREFIX}{i}" for i in range(1, literal.count(None) + 1)]
        _script_text(literal, names, kind)
    except ExpressionError:
        return None  # reported by the expression checks
    except UnsafePlacement as exc:
        return str(exc)
    return None


def config_problems(config: Mapping[str, Any], kind_of: KindOf) -> list[tuple[str, str]]:
    """``(field, problem)`` for every field of ``config`` that ``template_problem`` refuses."""
    found = []
    for path, template in strings(config):
        problem = template_problem(template, kind_of(path))
        if problem is not None:
            found.append((field_name(path), problem))
    return found


def substitute(config: Mapping[str, Any], kind_of: KindOf, ctx: expr.EvalContext
               ) -> Substituted:
    """Render ``config`` for one attempt of a step; ``SubstitutionError`` names the field
    whose value cannot be placed, ``ExpressionError`` a broken expression."""
    run = _Run(kind_of, ctx)
    return Substituted(run.value(config, ()), run.env, run.shown)


def _script_text(literal: Sequence[str | None], names: Sequence[str], kind: FieldKind,
                 values: Sequence[str] | None = None) -> str:
    """``literal``'s script with references to ``names``; with ``values``, also checks
    that each value may stand where its expression does."""
    if kind is FieldKind.PYTHON:
        return python_text(literal, names)
    where = placements(literal, bash=kind is not FieldKind.SH)
    for index, place in enumerate(where):
        if values is not None and place.integer and not _INTEGER.fullmatch(values[index]):
            raise UnsafePlacement(f"expression {index + 1} stands in shell arithmetic, where "
                                  f"only an integer is safe, and gave {values[index][:60]!r}")
    text = shell_text(literal, names, where)
    if kind is FieldKind.REMOTE_SHELL and values is not None:
        assignments = "".join(f"{name}={shlex.quote(value)}\n"
                              for name, value in zip(names, values, strict=True))
        return assignments + text
    return text


class _Run:
    def __init__(self, kind_of: KindOf, ctx: expr.EvalContext) -> None:
        self.kind_of = kind_of
        self.ctx = ctx
        self.count = 0
        self.env: dict[str, str] = {}
        self.shown: dict[str, str] = {}

    def value(self, value: Any, path: ConfigPath) -> Any:
        if isinstance(value, str):
            return self.string(value, path) if "${{" in value else value
        if isinstance(value, Mapping):
            return {key: self.value(item, (*path, key)) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item, (*path, index)) for index, item in enumerate(value)]
        return value

    def string(self, template: str, path: ConfigPath) -> Any:
        kind = self.kind_of(path)
        if kind in SCRIPTS:
            return self.script(template, kind, path)
        if kind is FieldKind.FIXED:
            raise SubstitutionError(f"{field_name(path)}: {template_problem(template, kind)}")
        rendered = expr.render_value(template, self.ctx)
        if kind in (FieldKind.ARGUMENT, FieldKind.PATH) and isinstance(rendered, str):
            _check_word(template, rendered, kind, field_name(path))
        return rendered

    def script(self, template: str, kind: FieldKind, path: ConfigPath) -> str:
        parts = expr.template_parts(template)
        literal = [p if isinstance(p, str) else None for p in parts]
        values = [expr.to_text(p.evaluate(self.ctx)) for p in parts
                  if isinstance(p, expr.Expression)]
        names = [f"{VARIABLE_PREFIX}{self.count + i}" for i in range(1, len(values) + 1)]
        self.count += len(values)
        where = field_name(path)
        if any("\x00" in value for value in values):
            raise SubstitutionError(f"{where}: a value holds a NUL character")
        try:
            text = _script_text(literal, names, kind, values)
        except UnsafePlacement as exc:
            raise SubstitutionError(f"{where}: {exc}") from exc
        if kind is not FieldKind.REMOTE_SHELL:
            self.env.update(zip(names, values, strict=True))
        self.shown[text] = expr.render(template, self.ctx)
        return text


def _check_word(template: str, rendered: str, kind: FieldKind, where: str) -> None:
    if "\x00" in rendered:
        raise SubstitutionError(f"{where}: the value holds a NUL character")
    if rendered.startswith("-") and not template.startswith("-"):
        raise SubstitutionError(f"{where}: the value {rendered[:60]!r} starts with '-' and "
                                "would be read as an option")
    if kind is FieldKind.PATH and ".." in PurePosixPath(rendered).parts \
            and ".." not in PurePosixPath(template).parts:
        raise SubstitutionError(f"{where}: the value {rendered[:60]!r} steps out with '..'")
