"""What a trigger may bring into an execution (PRODUCT.md section 8): a git ref, a commit
id and variables. One set of rules for API start bodies, ``ansflow run`` and webhooks.

- A ref follows ``git check-ref-format``: no ASCII control characters, space, ``~ ^ : ?
  * [ \\``, ``..``, ``@{``, ``//``; no component starting with ``.`` or ending in
  ``.lock``; not ending in ``/`` or ``.``; not ``@``; at most 255 characters. A short
  name (``main``, a tag, a commit id) may not start with ``-`` either, so it can never
  be read as an option.
- A commit is 4 to 64 hex digits.
- Variable names match ``[A-Za-z_][A-Za-z0-9_]{0,63}``; at most ``MAX_VARIABLES``
  variables; values are strings of at most 4 KiB (UTF-8, no NUL), integers within 64
  bits, finite numbers, booleans or null.

Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_REF = 255
MAX_VARIABLES = 100
MAX_VALUE_BYTES = 4096
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_COMMIT = re.compile(r"[0-9a-fA-F]{4,64}")
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//|/\.|\.lock(?:/|$)")


def ref_problem(ref: str, *, full: bool = False) -> str | None:
    """Why ``ref`` is not a usable git ref name, or ``None``; ``full``: it must be a full
    name (``refs/...``)."""
    if not ref:
        return "is empty"
    if len(ref) > MAX_REF:
        return f"is longer than {MAX_REF} characters"
    if full and not ref.startswith("refs/"):
        return f"is not a full ref name (refs/...): {ref[:80]!r}"
    if (ref.startswith(("-", ".", "/")) or ref.endswith(("/", ".")) or ref == "@"
            or _BAD_REF.search(ref)):
        return f"is not a valid git ref name: {ref[:80]!r}"
    return None


def commit_problem(commit: str) -> str | None:
    if _COMMIT.fullmatch(commit) is None:
        return f"is not a commit id (4 to 64 hex digits): {commit[:80]!r}"
    return None


def variable_name_problem(name: str) -> str | None:
    if _VARIABLE_NAME.fullmatch(name) is None:
        return "is not a variable name (one must match [A-Za-z_][A-Za-z0-9_]{0,63})"
    return None


def variable_value_problem(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else "is an integer beyond 64 bits"
    if isinstance(value, float):
        return None if math.isfinite(value) else "is not a finite number"
    if not isinstance(value, str):
        return "must be a string, number, boolean or null"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text"
    if size > MAX_VALUE_BYTES:
        return f"is longer than {MAX_VALUE_BYTES} bytes"
    return "holds a NUL character" if "\x00" in value else None


def variables_problems(variables: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(variable, problem)`` for every bad name or value, and for too many variables."""
    found = []
    if len(variables) > MAX_VARIABLES:
        found.append(("", f"has more than {MAX_VARIABLES} variables"))
    for name, value in variables.items():
        if problem := variable_name_problem(name) or variable_value_problem(value):
            found.append((name, problem))
    return found


def start_problems(ref: str | None, commit: str | None, variables: Mapping[str, Any]
                   ) -> list[str]:
    """Every problem of a manual start's inputs, each naming its field."""
    found = []
    if ref is not None and (problem := ref_problem(ref)):
        found.append(f"ref {problem}")
    if commit is not None and (problem := commit_problem(commit)):
        found.append(f"commit {problem}")
    found += [f"variables{'.' + name if name else ''} {problem}"
              for name, problem in variables_problems(variables)]
    return found


def _checked(check: Callable[[Any], str | None]) -> AfterValidator:
    def validate(value: Any) -> Any:
        problem = check(value)
        if problem is not None:
            raise ValueError(problem)
        return value
    return AfterValidator(validate)


GitRef = Annotated[str, _checked(ref_problem)]
CommitId = Annotated[str, _checked(commit_problem)]
VariableName = Annotated[str, _checked(variable_name_problem)]
VariableValue = Annotated[Any, _checked(variable_value_problem)]
Variables = Annotated[dict[VariableName, VariableValue], Field(max_length=MAX_VARIABLES)]
"""pydantic field types for request bodies: a 422 per bad item, naming it."""
