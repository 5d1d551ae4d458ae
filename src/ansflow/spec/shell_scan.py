"""The scanner behind ``spec/shell_subst.py``: reads a shell script once, keeping a
stack of the contexts it is in (command, quotes, ``$( )``, backticks, ``${ }``,
arithmetic, heredoc bodies, comments), and tells for each expression (a ``SENTINEL``
in the text) where it stands. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

SENTINEL = "\x00"
"""Stands for an expression in the scanned text; a script can't hold NUL (execve)."""


class Quoting(StrEnum):
    BARE = "bare"
    DOUBLE = "double"
    SINGLE = "single"
    ANSI = "ansi"
    HEREDOC = "heredoc"
    ARITHMETIC = "arithmetic"
    COMMENT = "comment"


@dataclass(frozen=True, slots=True)
class Placement:
    quoting: Quoting
    integer: bool = False
    """The value lands in shell arithmetic: only an integer is safe there."""
    after_backslash: bool = False
    after_dollar: bool = False


class UnsafePlacement(ValueError):
    """An expression stands where no variable reference keeps its text and its safety."""


class _Kind(Enum):
    CMD = "command"
    DQ = "double quotes"
    SQ = "single quotes"
    ANSI = "$'...'"
    HEREDOC = "heredoc"
    COMMENT = "comment"
    ARITH = "arithmetic"
    SUBSCRIPT = "subscript"
    PARAM = "parameter"
    PARAM_WORD = "parameter word"
    PARAM_OFFSET = "parameter offset"


_QUOTING = {_Kind.CMD: Quoting.BARE, _Kind.DQ: Quoting.DOUBLE, _Kind.SQ: Quoting.SINGLE,
            _Kind.ANSI: Quoting.ANSI, _Kind.HEREDOC: Quoting.HEREDOC,
            _Kind.ARITH: Quoting.ARITHMETIC, _Kind.SUBSCRIPT: Quoting.ARITHMETIC,
            _Kind.PARAM_OFFSET: Quoting.ARITHMETIC}
_ARITHMETIC = frozenset({_Kind.ARITH, _Kind.SUBSCRIPT, _Kind.PARAM_OFFSET})
_TRANSPARENT = frozenset({_Kind.PARAM, _Kind.PARAM_WORD})
_PAIRS = {_Kind.ARITH: ("(", ")"), _Kind.SUBSCRIPT: ("[", "]"), _Kind.PARAM_OFFSET: ("{", "}")}
_WORD = re.compile(r"[^\s'\"`$\\;&|()<>\x00]+")
_PARAM_NAME = re.compile(r"(?:[#!](?=[\w@*#?$!-]))?(?:[A-Za-z_]\w*|\d+|[@*#?$!-])")
_DELIMITER = re.compile(r"(?:[^\s;&|()<>'\"\\]|'[^']*'|\"[^\"]*\"|\\.)+", re.DOTALL)
_KEYWORDS = frozenset({"then", "do", "else", "elif", "if", "while", "until", "time", "!",
                       "for"})
_DECLARE = frozenset({"declare", "typeset", "local", "export", "readonly"})
_COMPARISONS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
_SEPARATORS = ";&|(){\n"
_PLAIN = {
    _Kind.DQ: re.compile(r'[^"\\$`\x00]+'), _Kind.SQ: re.compile(r"[^'\x00]+"),
    _Kind.ANSI: re.compile(r"[^'\\\x00]+"), _Kind.HEREDOC: re.compile(r"[^\\$`\x00\n]+"),
    _Kind.COMMENT: re.compile(r"[^\n\x00]+"), _Kind.CMD: re.compile(r"[ \t]+"),
}
"""Runs of characters that change nothing in a context, skipped in one step."""


@dataclass(slots=True)
class _Frame:
    kind: _Kind
    start: int
    closer: str = ""
    """CMD: ``)`` for ``$( )``, a backtick for backticks, empty for the script itself."""
    depth: int = 0
    end: int = -1
    """HEREDOC: where the body ends; ``resume``: after the delimiter line."""
    resume: int = -1
    outer_double: bool = False
    """PARAM and PARAM_WORD: the ``${...}`` stands inside double quotes or a heredoc."""
    arith_words: bool = False
    """CMD: the current command is ``let`` or ``declare -i``."""
    declaring: bool = False
    dbracket: int = -1
    """CMD: where an open ``[[`` starts."""


@dataclass(frozen=True, slots=True)
class _Heredoc:
    delimiter: str
    quoted: bool
    strip_tabs: bool


def scan(text: str, *, bash: bool) -> list[Placement]:
    """Where each ``SENTINEL`` of ``text`` stands; ``UnsafePlacement`` when no variable
    reference can stand there safely."""
    return _Scanner(text, bash).scan()


class _Scanner:
    def __init__(self, text: str, bash: bool) -> None:
        self.text = text
        self.bash = bash
        self.pos = 0
        self.stack = [_Frame(_Kind.CMD, 0)]
        self.found: list[Placement] = []
        self.escaped: set[int] = set()
        self.dollar: set[int] = set()
        self.pending: list[_Heredoc] = []
        self.bodies: list[_Frame] = []
        self.handlers: dict[_Kind, Callable[[_Frame, str], None]] = {
            _Kind.CMD: self._command, _Kind.DQ: self._double, _Kind.SQ: self._closing,
            _Kind.ANSI: self._closing, _Kind.HEREDOC: self._double,
            _Kind.COMMENT: self._closing, _Kind.ARITH: self._arithmetic,
            _Kind.SUBSCRIPT: self._arithmetic, _Kind.PARAM_OFFSET: self._arithmetic,
            _Kind.PARAM: self._parameter, _Kind.PARAM_WORD: self._parameter_word,
        }

    def scan(self) -> list[Placement]:
        while self.pos < len(self.text):
            if self.bodies and self.pos >= self.bodies[-1].end:
                self._leave_heredoc()
                continue
            char = self.text[self.pos]
            if char == SENTINEL:
                self._record()
                self.pos += 1
                continue
            frame = self.stack[-1]
            plain = _PLAIN.get(frame.kind)
            run = plain.match(self.text, self.pos) if plain is not None else None
            if run is not None:
                self.pos = run.end()
                continue
            self.handlers[frame.kind](frame, char)
        return self.found

    def _record(self) -> None:
        quoting: Quoting | None = None
        integer = False
        for frame in reversed(self.stack):
            if frame.kind is _Kind.COMMENT:
                quoting = Quoting.COMMENT
                break
            if quoting is None and frame.kind not in _TRANSPARENT:
                quoting = _QUOTING[frame.kind]
            integer = integer or frame.kind in _ARITHMETIC
            if frame.kind is _Kind.CMD:
                integer = integer or frame.arith_words or self._compared(frame)
                break
        assert quoting is not None
        self.found.append(Placement(quoting, integer and quoting is not Quoting.COMMENT,
                                    self.pos in self.escaped, self.pos in self.dollar))

    def _compared(self, frame: _Frame) -> bool:
        """Whether the word at ``pos`` is an operand of ``-eq`` and the like in ``[[ ]]``."""
        if frame.dbracket < 0:
            return False
        # a bounded look-around: an operand is a word or two away, not a megabyte
        before = self.text[max(frame.dbracket, self.pos - 256):self.pos].split()
        after = self.text[self.pos + 1:self.pos + 257].split()
        if self.text[self.pos - 1].strip():  # the word holding the expression goes on
            before = before[:-1]
        if self.text[self.pos + 1:self.pos + 2].strip():
            after = after[1:]
        return any(word in _COMPARISONS for word in before[-1:] + after[:1])

    def _push(self, kind: _Kind, advance: int, **fields: object) -> None:
        self.pos += advance
        self.stack.append(_Frame(kind, self.pos, **fields))  # type: ignore[arg-type]

    def _pop(self, advance: int = 1) -> None:
        self.stack.pop()
        self.pos += advance

    def _backslash(self, escapes: str | None) -> None:
        following = self.text[self.pos + 1:self.pos + 2]
        if following == SENTINEL:
            self.escaped.add(self.pos + 1)
            self.pos += 1
        elif escapes is None or (following and following in escapes):
            self.pos += 2
        else:
            self.pos += 1

    def _quoting_char(self, frame: _Frame, char: str, *, single: bool = True) -> None:
        """What a quote, ``$``, backtick or backslash does where quotes are active."""
        if char == "\\":
            self._backslash(None)
        elif char == '"':
            self._push(_Kind.DQ, 1)
        elif char == "'" and single:
            self._push(_Kind.SQ, 1)
        elif char == "$":
            self._dollar(frame, quotes=single)
        elif char == "`":
            self._push(_Kind.CMD, 1, closer="`")
        else:
            self.pos += 1

    def _dollar(self, frame: _Frame, *, quotes: bool) -> None:
        text, pos = self.text, self.pos
        following = text[pos + 1:pos + 2]
        if following == SENTINEL:
            self.dollar.add(pos + 1)
            self.pos += 1
        elif quotes and following == "'" and self.bash:
            self._push(_Kind.ANSI, 2)
        elif quotes and following == '"':
            self._push(_Kind.DQ, 2)
        elif text.startswith("((", pos + 1):
            self._push(_Kind.ARITH, 3)
        elif following == "(":
            self._push(_Kind.CMD, 2, closer=")")
        elif following == "[":
            self._push(_Kind.SUBSCRIPT, 2)
        elif following == "{":
            inside = frame.kind in (_Kind.DQ, _Kind.HEREDOC) or (
                frame.kind in _TRANSPARENT and frame.outer_double)
            self.pos += 2
            name = _PARAM_NAME.match(text, self.pos)
            self._push(_Kind.PARAM, len(name.group()) if name else 0, outer_double=inside)
        else:
            self.pos += 1

    def _command(self, frame: _Frame, char: str) -> None:
        if (char == "`" and frame.closer == "`") or (
                char == ")" and frame.closer == ")" and frame.depth == 0):
            self._pop()
        elif char in "()":
            self._paren(frame, char)
        elif char == "#" and self._word_start(frame):
            self._push(_Kind.COMMENT, 1)
        elif char in ";&|\n":
            self._separator(frame, char)
        elif self.text.startswith("<<", self.pos):
            self._heredoc_operator()
        elif _WORD.match(char):
            self._word(frame)
        else:
            self._quoting_char(frame, char)

    def _paren(self, frame: _Frame, char: str) -> None:
        if char == ")":
            frame.depth = max(0, frame.depth - 1)
            self.pos += 1
        elif self.text.startswith("((", self.pos) and self._command_start(frame):
            self._push(_Kind.ARITH, 2)
        else:
            frame.depth += 1
            self._separator(frame, char)

    def _separator(self, frame: _Frame, char: str) -> None:
        frame.arith_words = frame.declaring = False
        if char in ";\n":
            frame.dbracket = -1
        self.pos += 1
        if char == "\n":
            self._enter_heredoc()

    def _word(self, frame: _Frame) -> None:
        match = _WORD.match(self.text, self.pos)
        assert match is not None
        word = match.group()
        if word == "]]":
            frame.dbracket = -1
        elif frame.declaring and re.fullmatch(r"[-+][A-Za-z]*i[A-Za-z]*", word):
            frame.arith_words = True
        elif self._word_start(frame) and self._command_start(frame):
            frame.arith_words = word == "let"
            frame.declaring = word in _DECLARE
            if word == "[[":
                frame.dbracket = self.pos
        self.pos = match.end()

    def _word_start(self, frame: _Frame) -> bool:
        return self.pos == frame.start or self.text[self.pos - 1] in " \t\n;&|()<>"

    def _command_start(self, frame: _Frame) -> bool:
        """Whether a command starts at ``pos`` (after a separator or a keyword)."""
        text, index = self.text, self.pos - 1
        while index >= frame.start and text[index] in " \t":
            index -= 1
        if index < frame.start or text[index] in _SEPARATORS:
            return True
        end = index + 1
        while index >= frame.start and not text[index].isspace() \
                and text[index] not in _SEPARATORS:
            index -= 1
        return text[index + 1:end] in _KEYWORDS

    def _double(self, frame: _Frame, char: str) -> None:
        """Double quotes, and heredoc bodies (where a quote is plain text, skipped)."""
        if char == '"':
            self._pop()
        elif char == "\\":
            self._backslash('$`"\\\n')
        else:
            self._quoting_char(frame, char, single=False)

    def _closing(self, frame: _Frame, char: str) -> None:
        """Single quotes, ``$'...'`` and comments: only their end (and ``\\`` in
        ``$'...'``) gets here, the rest is skipped as plain runs."""
        if char == "\\":
            self._backslash(None)
        else:
            self._pop(0 if char == "\n" else 1)

    def _arithmetic(self, frame: _Frame, char: str) -> None:
        opener, closer = _PAIRS[frame.kind]
        if char == opener:
            frame.depth += 1
            self.pos += 1
        elif char == closer and frame.depth:
            frame.depth -= 1
            self.pos += 1
        elif char == closer:
            self._pop(2 if frame.kind is _Kind.ARITH else 1)
        else:
            self._quoting_char(frame, char)

    def _parameter(self, frame: _Frame, char: str) -> None:
        """Right after ``${name``: what follows decides how the rest is read."""
        if char == "}":
            self._pop()
        elif char == "[":
            self._push(_Kind.SUBSCRIPT, 1)
        elif char == ":" and self.text[self.pos + 1:self.pos + 2] not in ("-", "=", "+", "?"):
            frame.kind = _Kind.PARAM_OFFSET
            self.pos += 1
        else:
            frame.kind = _Kind.PARAM_WORD

    def _parameter_word(self, frame: _Frame, char: str) -> None:
        if char == "}" and frame.depth == 0:
            self._pop()
        elif char in "{}":
            frame.depth += 1 if char == "{" else -1
            self.pos += 1
        else:
            self._quoting_char(frame, char, single=not frame.outer_double)

    def _heredoc_operator(self) -> None:
        text = self.text
        if text.startswith("<<<", self.pos):
            self.pos += 3
            return
        self.pos += 2
        strip = text.startswith("-", self.pos)
        self.pos += strip
        while self.pos < len(text) and text[self.pos] in " \t":
            self.pos += 1
        match = _DELIMITER.match(text, self.pos)
        if match is None:
            return
        word = match.group()
        if SENTINEL in word:
            raise UnsafePlacement("an expression cannot be (part of) a heredoc delimiter")
        quoted = any(c in word for c in "'\"\\")
        delimiter = re.sub(r"\\(.)|'([^']*)'|\"([^\"]*)\"",
                           lambda m: next(g for g in m.groups() if g is not None), word)
        self.pending.append(_Heredoc(delimiter, quoted, strip))
        self.pos = match.end()

    def _enter_heredoc(self) -> None:
        """Start the next pending body; quoted ones (literal text) are checked and skipped."""
        while self.pending:
            doc = self.pending.pop(0)
            end, resume = self._body_end(doc)
            if not doc.quoted:
                self._push(_Kind.HEREDOC, 0, end=end, resume=resume)
                self.bodies.append(self.stack[-1])
                return
            if SENTINEL in self.text[self.pos:end]:
                raise UnsafePlacement(
                    f"an expression in a heredoc with a quoted delimiter ({doc.delimiter!r}) "
                    "would stay literal text: write the delimiter unquoted, or set an env "
                    "variable and write it to the file with printf")
            self.pos = resume

    def _body_end(self, doc: _Heredoc) -> tuple[int, int]:
        text, pos = self.text, self.pos
        while pos < len(text):
            newline = text.find("\n", pos)
            line_end = len(text) if newline < 0 else newline
            line = text[pos:line_end]
            if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter:
                return pos, min(line_end + 1, len(text))
            pos = line_end + 1
        return len(text), len(text)

    def _leave_heredoc(self) -> None:
        body = self.bodies.pop()
        while self.stack and self.stack[-1] is not body:
            self.stack.pop()
        self.stack.pop()
        self.pos = body.resume
        self._enter_heredoc()
