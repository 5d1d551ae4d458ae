"""GitHub-filter globs matched in time linear in the value, whatever the pattern.

``*`` and ``?`` stay within one path segment, ``**`` crosses segments, ``**/`` is any
number of whole segments (``a/**/b`` also matches ``a/b``); every other character is
literal and the whole value must match. A regular expression would backtrack: ``*a*a*a*b``
against a long run of ``a`` takes time growing with the value's length to the power of
the stars. Here the pattern is an automaton whose deterministic states are built as the
value is read (a lazy subset construction), so each character costs one table look-up
once its state has been seen.
"""

from __future__ import annotations

import functools
from enum import Enum

_MAX_STATES = 4096
"""Deterministic states kept per pattern; past this the table starts afresh (memory)."""


class _Kind(Enum):
    LITERAL = 1    # the character itself
    ONE = 2        # ``?``: any character but ``/``
    STAR = 3       # ``*``: any run without ``/``
    ANY = 4        # ``**``: any run
    SEGMENTS = 5   # ``**/`` entered: skip it, or start the run of LOOP
    LOOP = 6       # inside ``**/``: any character; a ``/`` may also end it


def _tokens(pattern: str) -> list[tuple[_Kind, str]]:
    tokens: list[tuple[_Kind, str]] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            tokens += [(_Kind.SEGMENTS, ""), (_Kind.LOOP, "")]
            i += 3
        elif pattern.startswith("**", i):
            tokens.append((_Kind.ANY, ""))
            i += 2
        else:
            char = pattern[i]
            kind = {"*": _Kind.STAR, "?": _Kind.ONE}.get(char, _Kind.LITERAL)
            tokens.append((kind, char if kind is _Kind.LITERAL else ""))
            i += 1
    return tokens


class Glob:
    """One compiled pattern; ``fullmatch`` is safe on untrusted values of any length."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._tokens = _tokens(pattern)
        self._accept = len(self._tokens)
        self._classes = frozenset(c for kind, c in self._tokens if kind is _Kind.LITERAL)
        self._start = self._closure({0})
        self._table: dict[tuple[frozenset[int], str | None], frozenset[int]] = {}

    def fullmatch(self, value: str) -> bool:
        states = self._start
        table = self._table
        for char in value:
            key = (states, char if char in self._classes or char == "/" else None)
            following = table.get(key)
            if following is None:
                if len(table) >= _MAX_STATES:
                    table.clear()
                following = table[key] = self._step(states, char)
            if not following:
                return False
            states = following
        return self._accept in states

    def _closure(self, states: set[int]) -> frozenset[int]:
        """``states`` and every state reachable from them without reading a character."""
        todo = list(states)
        while todo:
            index = todo.pop()
            if index == self._accept:
                continue
            kind = self._tokens[index][0]
            reached = {_Kind.STAR: (index + 1,), _Kind.ANY: (index + 1,),
                       _Kind.SEGMENTS: (index + 1, index + 2)}.get(kind, ())
            for state in reached:
                if state not in states:
                    states.add(state)
                    todo.append(state)
        return frozenset(states)

    def _step(self, states: frozenset[int], char: str) -> frozenset[int]:
        following: set[int] = set()
        for index in states:
            if index == self._accept:
                continue
            kind, literal = self._tokens[index]
            if (kind is _Kind.LITERAL and char == literal) or (kind is _Kind.ONE and char != "/"):
                following.add(index + 1)
            elif (kind is _Kind.STAR and char != "/") or kind is _Kind.ANY:
                following.add(index)
            elif kind is _Kind.LOOP:
                following.add(index)
                if char == "/":
                    following.add(index + 1)
        return self._closure(following)


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> Glob:
    return Glob(pattern)


def glob_match(value: str, pattern: str) -> bool:
    """Whether the whole of ``value`` matches the glob ``pattern`` (see the module)."""
    return compile_glob(pattern).fullmatch(value)
