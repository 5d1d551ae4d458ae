"""The ``when`` / ``${{ }}`` expression language (PRODUCT.md section 3). Never ``eval``.

Text is tokenized and parsed into a small tree (``spec/expr_parse.py``) once, then
evaluated against an ``EvalContext`` as often as needed. Evaluation never raises:

- a missing key, index or step gives ``null``; property access on anything else too;
- ``==`` / ``!=`` compare without coercion, except int with float (``1 == 1.0``);
  strings compare case-sensitively; ``< <= > >=`` are false unless both sides are
  numbers or both are strings;
- ``x in list`` (element), ``x in string`` (substring), ``key in mapping``; any other
  right side (``null`` included) gives false, and ``not in`` is its negation;
- ``a or b`` / ``a and b`` give an operand, as in GitHub Actions, so
  ``${{ vars.tag || 'latest' }}`` works; ``not`` gives a boolean;
- null, false, 0, '', [] and {} are false (``truthy``).

Templates: ``render`` turns every ``${{ expr }}`` of a string into text (null -> '',
booleans -> 'true'/'false', lists and mappings -> compact JSON). ``render_value``
renders the strings inside dicts and lists, and a string that is exactly one
``${{ expr }}`` (whitespace around allowed) becomes the value itself, keeping its type:
``depth: ${{ vars.depth }}`` can yield the int 3, and a missing value yields None.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, assert_never

from ansflow.errors import ExpressionError
from ansflow.spec.expr_parse import (
    STATUS_FUNCTIONS,
    Access,
    BoolOp,
    Call,
    Compare,
    ListLit,
    Lit,
    Node,
    Not,
    Root,
    parse_tree,
    walk,
)
from ansflow.spec.glob import glob_match

__all__ = [
    "EvalContext", "Expression", "StepView", "glob_match", "parse", "parse_condition",
    "render", "render_value", "template_expressions", "template_parts", "to_text", "truthy",
    "walk_strings",
]


@dataclass(frozen=True, slots=True)
class StepView:
    """What an expression sees of a finished step: ``steps.<name>.status`` and ``.outputs``."""

    status: str
    outputs: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvalContext:
    """Everything an expression can read. ``success``/``failure``/``cancelled`` are the
    values of the status functions, decided by the engine from the step's dependencies."""

    trigger: Mapping[str, Any] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, StepView] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    execution: Mapping[str, Any] = field(default_factory=dict)
    matrix: Mapping[str, Any] = field(default_factory=dict)
    """``matrix.*``: the values of this instance of a matrix step (empty elsewhere)."""
    success: bool = True
    failure: bool = False
    cancelled: bool = False
    hash_files: Callable[[list[str]], str] | None = None
    """``hashFiles(glob, ...)``: given by the engine, which knows the step's workspace
    (the expression language itself does no I/O)."""


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed expression: immutable, safe to share and to evaluate any number of times."""

    source: str
    node: Node = field(repr=False)

    def evaluate(self, ctx: EvalContext) -> Any:
        return _eval(self.node, ctx)

    @property
    def step_refs(self) -> frozenset[str]:
        """Step names read through ``steps.<name>`` or ``steps['name']``."""
        return self.refs("steps")

    def refs(self, root: str) -> frozenset[str]:
        """Keys read directly under ``root``: ``matrix.os`` gives ``os`` for ``matrix``."""
        return frozenset(
            node.keys[0].value for node in walk(self.node)
            if isinstance(node, Access) and node.target == Root(root)
            and isinstance(node.keys[0], Lit) and isinstance(node.keys[0].value, str)
        )

    @property
    def status_functions(self) -> frozenset[str]:
        return frozenset(node.name for node in walk(self.node)
                         if isinstance(node, Call) and node.name in STATUS_FUNCTIONS)

    @property
    def roots(self) -> frozenset[str]:
        return frozenset(node.name for node in walk(self.node) if isinstance(node, Root))


def trigger_context(trigger: Mapping[str, Any]) -> dict[str, Any]:
    """``trigger.*`` for expressions: the stored trigger plus branch/tag derived from ref."""
    ref = trigger.get("ref") or ""
    derived: dict[str, Any] = {"ref": ref or None, "branch": None, "tag": None}
    if ref.startswith("refs/heads/"):
        derived["branch"] = ref.removeprefix("refs/heads/")
    elif ref.startswith("refs/tags/"):
        derived["tag"] = ref.removeprefix("refs/tags/")
    for key in ("commit", "event", "actor"):
        derived.setdefault(key, None)
    return {**derived, **{k: v for k, v in trigger.items() if v is not None}}


@functools.lru_cache(maxsize=2048)
def parse(text: str) -> Expression:
    """Parse one expression; ``ExpressionError`` carries the 0-based position of the fault."""
    return Expression(text, parse_tree(text))


_WRAPPED = re.compile(r"\s*\$\{\{(.*)\}\}\s*", re.DOTALL)


@functools.lru_cache(maxsize=1024)
def parse_condition(text: str) -> Expression:
    """Parse a ``when``. Without a status function it means ``success() and (text)``, as in
    GitHub Actions. A condition wrapped whole in ``${{ }}`` is accepted as well."""
    wrapped = _WRAPPED.fullmatch(text)
    parsed = _parse_at(wrapped.group(1), wrapped.start(1)) if wrapped else parse(text)
    if parsed.status_functions:
        return Expression(text, parsed.node)
    return Expression(text, BoolOp("and", (Call("success", ()), parsed.node)))


def truthy(value: Any) -> bool:
    if isinstance(value, bool | int | float | str | list | tuple | Mapping):
        return bool(value)
    return value is not None


def to_text(value: Any) -> str:
    """How a value appears when substituted into a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(_plain(value), separators=(",", ":"), ensure_ascii=False, default=str)


def template_expressions(template: str) -> list[Expression]:
    """Every ``${{ }}`` of ``template``, parsed. Positions in errors count from the start
    of ``template``."""
    return [part for part in _segments(template) if isinstance(part, Expression)]


def template_parts(template: str) -> tuple[str | Expression, ...]:
    """``template`` split into its literal texts and its parsed ``${{ }}`` expressions."""
    return _segments(template)


def render(template: str, ctx: EvalContext) -> str:
    return "".join(part if isinstance(part, str) else to_text(part.evaluate(ctx))
                   for part in _segments(template))


def render_value(value: Any, ctx: EvalContext) -> Any:
    """Render every string inside ``value``; a lone ``${{ expr }}`` keeps the value's type."""
    if isinstance(value, str):
        parts = _segments(value)
        exprs = [part for part in parts if isinstance(part, Expression)]
        if len(exprs) == 1 and all(isinstance(p, Expression) or p.isspace() for p in parts):
            return _plain(exprs[0].evaluate(ctx))
        return render(value, ctx)
    if isinstance(value, Mapping):
        return {key: render_value(item, ctx) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(item, ctx) for item in value]
    return value


def walk_strings(value: Any) -> Iterator[str]:
    """Every string inside nested dict/list values (keys are not visited)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from walk_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from walk_strings(item)


@functools.lru_cache(maxsize=1024)
def _segments(template: str) -> tuple[str | Expression, ...]:
    parts: list[str | Expression] = []
    pos = 0
    while (start := template.find("${{", pos)) >= 0:
        if start > pos:
            parts.append(template[pos:start])
        end = _closing(template, start + 3, start)
        parts.append(_parse_at(template[start + 3:end], start + 3))
        pos = end + 2
    if pos < len(template):
        parts.append(template[pos:])
    return tuple(parts)


def _closing(template: str, pos: int, start: int) -> int:
    """Index of the ``}}`` closing the ``${{`` at ``start``; quoted text may hold ``}}``."""
    quote, quote_at = "", 0
    for i in range(pos, len(template)):
        char = template[i]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote, quote_at = char, i
        elif template.startswith("}}", i):
            return i
    if quote:
        raise ExpressionError("unterminated string", position=quote_at)
    raise ExpressionError("unclosed '${{' (no matching '}}')", position=start)


def _parse_at(text: str, offset: int) -> Expression:
    """Parse a piece of a larger string, reporting positions within the larger string."""
    try:
        return parse(text)
    except ExpressionError as exc:
        if exc.position is None or offset == 0:
            raise
        message = exc.message.removesuffix(f" (at position {exc.position})")
        raise ExpressionError(message, position=exc.position + offset) from None


def _eval(node: Node, ctx: EvalContext) -> Any:
    match node:
        case Lit(value):
            return value
        case ListLit(items):
            return [_eval(item, ctx) for item in items]
        case Root(name):
            return getattr(ctx, name)
        case Access(target, keys):
            return _access(_eval(target, ctx), keys, ctx)
        case Call(name, args):
            return _call(name, args, ctx)
        case Not(operand):
            return not truthy(_eval(operand, ctx))
        case BoolOp(op, operands):
            return _bool_op(op == "or", operands, ctx)
        case Compare(op, left, right):
            return _COMPARE[op](_eval(left, ctx), _eval(right, ctx))
    assert_never(node)


def _call(name: str, args: tuple[Node, ...], ctx: EvalContext) -> Any:
    if name in _STATUS:
        return _STATUS[name](ctx)
    if name == "hashfiles":
        return _hash_files(ctx, [_eval(arg, ctx) for arg in args])
    return _FUNCTIONS[name](*(_eval(arg, ctx) for arg in args))


def _access(value: Any, keys: tuple[Node, ...], ctx: EvalContext) -> Any:
    for key in keys:
        value = _get(value, _eval(key, ctx))
    return value


def _get(container: Any, key: Any) -> Any:
    if isinstance(container, StepView):
        container = {"status": container.status, "outputs": container.outputs}
    if isinstance(container, Mapping):
        try:
            return container.get(key)
        except TypeError:  # an unhashable key
            return None
    if isinstance(container, list | tuple) and type(key) is int and 0 <= key < len(container):
        return container[key]
    return None


def _bool_op(is_or: bool, operands: tuple[Node, ...], ctx: EvalContext) -> Any:
    value: Any = None
    for operand in operands:
        value = _eval(operand, ctx)
        if truthy(value) == is_or:
            return value
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "mapping"
    return "list" if isinstance(value, list | tuple) else type(value).__name__


def _eq(left: Any, right: Any) -> bool:
    if _kind(left) != _kind(right):
        return False
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(_eq, left, right))
    if isinstance(left, Mapping):
        return left.keys() == right.keys() and all(_eq(left[k], right[k]) for k in left)
    return bool(left == right)


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(left: Any, right: Any) -> bool:
        kind = _kind(left)
        return kind in ("number", "str") and kind == _kind(right) and compare(left, right)
    return check


def _contains(left: Any, right: Any) -> bool:
    if isinstance(right, str):
        return isinstance(left, str) and left in right
    if isinstance(right, list | tuple):
        return any(_eq(left, item) for item in right)
    if isinstance(right, Mapping):
        return isinstance(left, str) and left in right
    return False


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": _eq, "!=": lambda a, b: not _eq(a, b), "in": _contains,
    "not in": lambda a, b: not _contains(a, b),
    "<": _ordered(operator.lt), "<=": _ordered(operator.le),
    ">": _ordered(operator.gt), ">=": _ordered(operator.ge),
}
_STATUS: dict[str, Callable[[EvalContext], bool]] = {
    "success": lambda ctx: ctx.success, "failure": lambda ctx: ctx.failure,
    "always": lambda ctx: True, "cancelled": lambda ctx: ctx.cancelled,
}
def _hash_files(ctx: EvalContext, patterns: list[Any]) -> str:
    if ctx.hash_files is None:
        raise ExpressionError("hashFiles() is only available in a step (its config, env, "
                              "cache and when)")
    if not all(isinstance(p, str) for p in patterns):
        raise ExpressionError("hashFiles() takes glob patterns (strings)")
    return ctx.hash_files(patterns)


_FORMAT = re.compile(r"\{\{|\}\}|\{(\d{1,4})\}")


def _format(template: Any, *args: Any) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1) is None:
            return match.group()[0]
        index = int(match.group(1))
        return to_text(args[index]) if index < len(args) else match.group()
    return _FORMAT.sub(substitute, to_text(template))


def _join(items: Any, separator: Any = ",") -> str:
    if isinstance(items, list | tuple):
        return to_text(separator).join(to_text(item) for item in items)
    return items if isinstance(items, str) else ""


def _strings(check: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    return lambda a, b: isinstance(a, str) and isinstance(b, str) and check(a, b)


def _plain(value: Any) -> Any:
    """Mappings, tuples and step views as plain dicts and lists (for JSON and render_value)."""
    if isinstance(value, StepView):
        return {"status": value.status, "outputs": dict(value.outputs)}
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "startswith": _strings(str.startswith),
    "endswith": _strings(str.endswith),
    "contains": lambda hay, needle: (_contains(needle, hay)
                                     if isinstance(hay, str | list | tuple) else False),
    "matches": _strings(glob_match),
    "format": _format,
    "join": _join,
    "tojson": lambda value: json.dumps(_plain(value), separators=(",", ":"),
                                       ensure_ascii=False, default=str),
}
