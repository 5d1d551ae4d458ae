"""``${{ }}`` in a Python script (``custom`` with ``shell: python``): the value is data.

Each expression becomes a read of a variable ``V`` of the step's environment:

==========================  ===================================================
the expression is           it becomes
==========================  ===================================================
in code                     ``(__import__("os").environ["V"])``: a ``str``
in a string literal         a replacement field ``{__import__("os").environ["V"]}``;
                            the literal becomes an f-string (``'a {b}'`` ->
                            ``f'a {{b}}'``), so its other text stays the same
in an f-string              the same field, or the read itself inside ``{ }``
in a comment                the variable's name
in a bytes literal          refused: there is no field to put the value in
==========================  ===================================================

A value in code is a string now, not pasted source: ``n = ${{ vars.n }}`` gives
``'3'``; write ``int(${{ vars.n }})``. Why a wrong guess cannot run a value: the value
is never in the text at all, only the variable's name is. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from ansflow.spec.shell_subst import SENTINEL, UnsafePlacement

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PREFIXES = frozenset({"r", "u", "b", "f", "br", "rb", "fr", "rf"})
_QUOTES = "'\""


def python_text(parts: Sequence[str | None], names: Sequence[str]) -> str:
    """The script with expression ``i`` (``None`` in ``parts``) reading ``names[i]``."""
    if any(part is not None and SENTINEL in part for part in parts):
        raise UnsafePlacement("the script contains a NUL character")
    text = "".join(SENTINEL if part is None else part for part in parts)
    rewriter = _Rewriter(text, iter(names))
    try:
        rewriter.code(0, enclosing="")
    except RecursionError:
        raise UnsafePlacement("strings and f-string fields are nested too deeply") from None
    return "".join(rewriter.out)


def _read(name: str, enclosing: str) -> str:
    quote = next((q for q in '"\'' if q not in enclosing), None)
    if quote is None:
        raise UnsafePlacement("an expression stands in a string literal inside an "
                              "f-string's {...} field: put it in the field itself")
    return f"__import__({quote}os{quote}).environ[{quote}{name}{quote}]"


class _Rewriter:
    def __init__(self, text: str, names: Iterator[str]) -> None:
        self.text = text
        self.names = names
        self.out: list[str] = []

    def code(self, pos: int, enclosing: str) -> int:
        """Copy code from ``pos``; inside an f-string field (``enclosing`` holds the quotes
        of the strings around it) stop after the ``}`` that closes the field."""
        text, depth = self.text, 0
        while pos < len(text):
            char = text[pos]
            if char == SENTINEL:
                self.out.append(f"({_read(next(self.names), enclosing)})")
                pos += 1
            elif char == "#" and not enclosing:
                pos = self._comment(pos)
            elif char in _QUOTES:
                pos = self._string(pos, "", enclosing)
            elif (word := _IDENTIFIER.match(text, pos)) is not None:
                pos = self._word(word, enclosing)
            elif enclosing and char in "{}":
                depth += 1 if char == "{" else -1
                self.out.append(char)
                pos += 1
                if depth < 0:
                    return pos
            else:
                step = 2 if char == "\\" else 1
                self.out.append(text[pos:pos + step])
                pos += step
        return pos

    def _word(self, word: re.Match[str], enclosing: str) -> int:
        end = word.end()
        if word.group().lower() in _PREFIXES and self.text[end:end + 1] in tuple(_QUOTES):
            return self._string(end, word.group(), enclosing)
        self.out.append(word.group())
        return end

    def _comment(self, pos: int) -> int:
        end = self.text.find("\n", pos)
        end = len(self.text) if end < 0 else end
        comment = self.text[pos:end]
        while SENTINEL in comment:
            comment = comment.replace(SENTINEL, next(self.names), 1)
        self.out.append(comment)
        return end

    def _string(self, pos: int, prefix: str, enclosing: str) -> int:
        """A string literal whose quote is at ``pos``; returns where it ends."""
        text = self.text
        quote = text[pos] * 3 if text.startswith(text[pos] * 3, pos) else text[pos]
        body_start = pos + len(quote)
        end = body_start
        while end < len(text) and not text.startswith(quote, end):
            end += 2 if text[end] == "\\" else 1
        body = text[body_start:end]
        close = min(end + len(quote), len(text))
        lower = prefix.lower()
        if SENTINEL not in body:
            self.out.append(prefix + text[pos:close])
            return close
        if "b" in lower:
            raise UnsafePlacement("an expression cannot stand in a bytes literal: read "
                                  "it from a str literal and encode it")
        fresh = "f" not in lower
        self.out.append(prefix.replace("u", "").replace("U", "") + ("f" if fresh else "")
                        + quote)
        self._body(body_start, end, raw="r" in lower, fresh=fresh,
                   enclosing=enclosing + quote[0])
        self.out.append(text[end:close])
        return close

    def _body(self, pos: int, end: int, *, raw: bool, fresh: bool, enclosing: str) -> None:
        """The text of a string turned f-string; ``fresh``: it was not an f-string before."""
        text = self.text
        while pos < end:
            char = text[pos]
            if char == SENTINEL:
                self.out.append("{" + _read(next(self.names), enclosing) + "}")
                pos += 1
            elif char == "\\":
                pos = self._escape(pos, raw=raw)
            elif char in "{}" and (fresh or text.startswith(char * 2, pos)):
                self.out.append(char * 2)
                pos += 1 if fresh else 2
            elif char == "{":
                self.out.append(char)
                pos = self.code(pos + 1, enclosing)
            else:
                self.out.append(char)
                pos += 1

    def _escape(self, pos: int, *, raw: bool) -> int:
        text = self.text
        following = text[pos + 1:pos + 2]
        if following == SENTINEL:
            # the script's backslash would escape the field's brace: keep it literal text
            self.out.append("\\" if raw else "\\\\")
            return pos + 1
        if not raw and text.startswith("N{", pos + 1):
            close = text.find("}", pos)
            close = len(text) if close < 0 else close + 1
            self.out.append(text[pos:close])
            return close
        self.out.append(text[pos:pos + 2])
        return pos + 2
