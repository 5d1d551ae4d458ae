"""Tokenizer and recursive-descent parser of the expression language (see ``spec/expr.py``).

Grammar, lowest precedence first::

    expression := conjunction (("or" | "||") conjunction)*
    conjunction:= negation (("and" | "&&") negation)*
    negation   := ("not" | "!")* comparison
    comparison := postfix [("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") postfix]
    postfix    := primary ("." NAME | "[" expression "]")*
    primary    := literal | "[" [expression ("," expression)* [","]] "]" | "(" expression ")"
                | FUNCTION "(" [expression ("," expression)*] ")" | ROOT

Chains of ``and``/``or``/access are flat nodes and comparisons do not chain, so the tree
is only as deep as the explicit nesting, which is bounded: evaluation cannot exhaust
the Python stack whatever the input.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from ansflow.errors import ExpressionError

ROOTS = ("trigger", "env", "vars", "steps", "secrets", "execution", "matrix")
STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})
ARITY: dict[str, tuple[int, int | None]] = {
    **dict.fromkeys(STATUS_FUNCTIONS, (0, 0)),
    "startswith": (2, 2), "endswith": (2, 2), "contains": (2, 2), "matches": (2, 2),
    "format": (1, None), "join": (1, 2), "tojson": (1, 1), "hashfiles": (1, None),
}
COMPARISONS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
MAX_NESTING = 32

_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}
_KEYWORDS = frozenset({"and", "or", "not", "in"})
_TOKEN = re.compile(r"""
    (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\],.])
""", re.VERBOSE | re.ASCII)
# After a dot any step or output key is a property name, even one starting with a digit.
_MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*", re.ASCII)
_SPACE = " \t\r\n\f\v"


@dataclass(frozen=True, slots=True)
class Lit:
    value: Any


@dataclass(frozen=True, slots=True)
class ListLit:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Root:
    name: str


@dataclass(frozen=True, slots=True)
class Access:
    target: Node
    keys: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    operand: Node


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Compare:
    op: str
    left: Node
    right: Node


Node = Lit | ListLit | Root | Access | Call | Not | BoolOp | Compare


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents first."""
    yield node
    match node:
        case ListLit(children) | Call(_, children) | BoolOp(_, children):
            pass
        case Access(target, keys):
            children = (target, *keys)
        case Compare(_, left, right):
            children = (left, right)
        case Not(operand):
            children = (operand,)
        case _:
            children = ()
    for child in children:
        yield from walk(child)


class Token(NamedTuple):
    kind: str  # num, str, name, op, end
    text: str
    pos: int
    end: int
    value: Any = None

    def is_(self, *texts: str) -> bool:
        return self.kind in ("name", "op") and self.text in texts


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = _skip_space(text, 0)
    while pos < len(text):
        after_dot = bool(tokens) and tokens[-1].kind == "op" and tokens[-1].text == "."
        token = _next_token(text, pos, after_dot)
        tokens.append(token)
        pos = _skip_space(text, token.end)
    tokens.append(Token("end", "", len(text), len(text)))
    return tokens


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _SPACE:
        pos += 1
    return pos


def _next_token(text: str, pos: int, after_dot: bool) -> Token:
    if text[pos] in "'\"":
        return _string(text, pos)
    if after_dot and (member := _MEMBER.match(text, pos)):
        return Token("name", member.group(), pos, member.end())
    match = _TOKEN.match(text, pos)
    if match is None:
        raise ExpressionError(f"unexpected character {text[pos]!r}", position=pos)
    kind, raw = match.lastgroup or "op", match.group()
    value = _number(raw, pos) if kind == "num" else None
    return Token(kind, raw, pos, match.end(), value)


def _string(text: str, start: int) -> Token:
    quote, pos, chunks = text[start], start + 1, []
    while (end := text.find(quote, pos)) >= 0:
        chunks.append(text[pos:end])
        if not text.startswith(quote, end + 1):
            return Token("str", text[start:end + 1], start, end + 1, "".join(chunks))
        chunks.append(quote)
        pos = end + 2
    raise ExpressionError("unterminated string", position=start)


def _number(raw: str, pos: int) -> int | float:
    if len(raw) > 64:  # int() refuses very long digit strings with a ValueError
        raise ExpressionError("number literal is too long", position=pos)
    return float(raw) if any(c in raw for c in ".eE") else int(raw)


def parse_tree(text: str) -> Node:
    """Parse ``text`` into a tree or raise ``ExpressionError`` with a 0-based position."""
    return _Parser(tokenize(text)).parse()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def accept(self, *texts: str) -> bool:
        if self.peek().is_(*texts):
            self.advance()
            return True
        return False

    def expect(self, text: str, why: str) -> None:
        token = self.peek()
        if not token.is_(text):
            found = "end of expression" if token.kind == "end" else repr(token.text)
            raise ExpressionError(f"expected {text!r} {why}, found {found}", position=token.pos)
        self.advance()

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ExpressionError("empty expression", position=0)
        node = self.expression()
        if self.peek().kind != "end":
            raise _unexpected(self.peek())
        return node

    def expression(self) -> Node:
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise ExpressionError("expression is nested too deeply", position=self.peek().pos)
            return self.bool_op("or", ("or", "||"), self.conjunction)
        finally:
            self.depth -= 1

    def bool_op(self, op: str, spellings: tuple[str, ...], operand: Any) -> Node:
        operands: list[Node] = [operand()]
        while self.accept(*spellings):
            operands.append(operand())
        return operands[0] if len(operands) == 1 else BoolOp(op, tuple(operands))

    def conjunction(self) -> Node:
        return self.bool_op("and", ("and", "&&"), self.negation)

    def negation(self) -> Node:
        count = 0
        while self.accept("not", "!"):
            count += 1
        node = self.comparison()
        if count % 2:
            return Not(node)
        return Not(Not(node)) if count else node

    def comparison(self) -> Node:
        left = self.postfix()
        token = self.peek()
        if token.is_("not") and self.peek(1).is_("in"):
            self.advance()
            op = "not in"
        elif token.is_(*COMPARISONS):
            op = token.text
        else:
            return left
        self.advance()
        return Compare(op, left, self.postfix())

    def postfix(self) -> Node:
        node = self.primary()
        keys: list[Node] = []
        while True:
            if self.accept("."):
                token = self.advance()
                if token.kind != "name":
                    raise ExpressionError("expected a property name after '.'", position=token.pos)
                keys.append(Lit(token.text))
            elif self.accept("["):
                keys.append(self.expression())
                self.expect("]", "to close '['")
            else:
                return Access(node, tuple(keys)) if keys else node

    def primary(self) -> Node:
        token = self.advance()
        if token.kind in ("num", "str"):
            return Lit(token.value)
        if token.kind == "name" and token.text not in _KEYWORDS:
            return self.name(token)
        if token.is_("("):
            node = self.expression()
            self.expect(")", "to close '('")
            return node
        if token.is_("["):
            return ListLit(self.items("]", "to close the list"))
        raise _unexpected(token)

    def name(self, token: Token) -> Node:
        if token.text in _LITERALS:
            return Lit(_LITERALS[token.text])
        if self.peek().is_("("):
            return self.call(token)
        if token.text in ROOTS:
            return Root(token.text)
        if token.text.lower() in ARITY:
            raise ExpressionError(f"{token.text!r} is a function: write {token.text}()",
                                  position=token.pos)
        raise ExpressionError(f"unknown name {token.text!r} (expected {', '.join(ROOTS)})",
                              position=token.pos)

    def call(self, token: Token) -> Node:
        name = token.text.lower()  # GitHub spells startsWith, toJSON
        if name not in ARITY:
            close = difflib.get_close_matches(name, ARITY, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ExpressionError(f"unknown function {token.text!r}{hint}", position=token.pos)
        self.advance()
        args = self.items(")", f"after the arguments of {token.text}()")
        low, high = ARITY[name]
        if len(args) < low or (high is not None and len(args) > high):
            raise ExpressionError(f"{token.text}() takes {_arity(low, high)}, got {len(args)}",
                                  position=token.pos)
        return Call(name, args)

    def items(self, close: str, why: str) -> tuple[Node, ...]:
        items: list[Node] = []
        while not self.accept(close):
            items.append(self.expression())
            if not self.accept(","):
                self.expect(close, why)
                break
        return tuple(items)


def _arity(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument{'s' if low != 1 else ''}"
    if low == high:
        return "no arguments" if low == 0 else f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments"


def _unexpected(token: Token) -> ExpressionError:
    if token.kind == "end":
        return ExpressionError("unexpected end of expression", position=token.pos)
    return ExpressionError(f"unexpected token {token.text!r}", position=token.pos)
