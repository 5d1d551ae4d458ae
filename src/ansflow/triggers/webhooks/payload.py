"""Typed reads of a decoded webhook payload: pydantic models of the fields AnsFlow reads.

Fields are strict (no coercion) and ``null`` counts as absent. A problem becomes
``RequestError("malformed payload: '<path>' <problem>")`` naming the field's path
(``'commits[0].added'``), through ``read``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from ansflow.errors import RequestError
from ansflow.triggers.inputs import ref_problem

_COMMIT = re.compile(r"^[0-9a-fA-F]{7,64}$")
MAX_TEXT = 255


def malformed(path: str, problem: str) -> RequestError:
    return RequestError(f"malformed payload: {path} {problem}")


# Field types: each check raises the problem that follows the field's path in the message

def _problem(text: str) -> PydanticCustomError:
    # the text goes in as context: a payload's braces are never read as a template
    return PydanticCustomError("malformed", "{problem}", {"problem": text})


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise _problem("is not a string")
    if len(value) > MAX_TEXT:
        raise _problem(f"is longer than {MAX_TEXT} characters")
    return value


def _name(value: Any) -> str:
    """A required text: absent, ``null`` and empty all count as missing."""
    if value is None or value == "":
        raise _problem("is missing")
    return _text(value)


def check_ref(ref: str) -> str:
    """A full git ref name; the git-check-ref-format rules that keep it safe as an argument."""
    if ref_problem(ref, full=True) is not None:
        raise _problem(f"is not a valid git ref name: {ref[:80]!r}")
    return ref


def check_commit(value: Any) -> str:
    commit = _name(value)
    if not _COMMIT.match(commit):
        raise _problem(f"is not a commit id: {commit[:80]!r}")
    return commit


def _branch(value: Any) -> str:
    """A branch name (not a full ref), checked like the ref it names."""
    name = _name(value)
    check_ref(f"refs/heads/{name}")
    return name


def _optional(check: Callable[[Any], str]) -> Callable[[Any], str | None]:
    """``check`` for a present, non-empty value; absent or empty is ``None``."""
    return lambda value: None if value is None or value == "" else check(value)


def _flag(value: Any) -> bool:
    if value is not None and not isinstance(value, bool):
        raise _problem("is not a boolean")
    return bool(value)


def _integer(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not (
                minimum <= value < 2**31):
            raise _problem(f"is not an integer from {minimum} to 2**31-1")
        return value
    return check


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _problem("is not a list")
    return value


def _paths(value: Any) -> list[str]:
    if not all(isinstance(item, str) for item in _list(value)):
        raise _problem("lists a path that is not a string")
    return value  # type: ignore[no-any-return]


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _problem("is not an object")
    return value


Text = Annotated[str, PlainValidator(_text)]
Name = Annotated[str, PlainValidator(_name)]
Ref = Annotated[str, PlainValidator(lambda value: check_ref(_name(value)))]
OptionalRef = Annotated[str | None, PlainValidator(_optional(lambda v: check_ref(_name(v))))]
Commit = Annotated[str, PlainValidator(check_commit)]
OptionalCommit = Annotated[str | None, PlainValidator(_optional(check_commit))]
Branch = Annotated[str, PlainValidator(_branch)]
OptionalBranch = Annotated[str | None, PlainValidator(_optional(_branch))]
Flag = Annotated[bool, PlainValidator(_flag)]
Number = Annotated[int, PlainValidator(_integer(1))]
Count = Annotated[int, PlainValidator(_integer(0))]
RawList = Annotated[list[Any], PlainValidator(_list)]
Paths = Annotated[list[str], PlainValidator(_paths)]
JsonObject = Annotated[dict[str, Any], PlainValidator(_object)]


class Payload(BaseModel):
    """A part of a payload: the fields AnsFlow reads, every other field ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


P = TypeVar("P", bound=Payload)


def read(model: type[P], data: Mapping[str, Any], path: str = "") -> P:
    """``data`` as ``model``; the first problem as ``RequestError`` naming its path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _first(exc, path) from None


def _first(exc: ValidationError, path: str) -> RequestError:
    error = exc.errors(include_url=False)[0]
    where = path + "".join(f".{part}" if isinstance(part, str) else f"[{part}]"
                           for part in error["loc"])
    problem = {"missing": "is missing", "model_type": "is not an object"}.get(
        error["type"], error["msg"])
    return malformed(f"'{where.lstrip('.')}'", problem)


class Person(Payload):
    """Who sent a delivery; providers name them in different fields."""

    login: Text | None = None
    username: Text | None = None
    user_name: Text | None = None
    name: Text | None = None

    def first(self, *names: str) -> str | None:
        """The first of ``names`` that holds a non-empty string."""
        return next((value for key in names if (value := getattr(self, key))), None)


def actor(*people: tuple[Person | None, tuple[str, ...]]) -> str | None:
    """The first name found, trying each person's fields in order."""
    return next((name for person, names in people
                 if person is not None and (name := person.first(*names))), None)


class ChangedFiles(Payload):
    added: Paths | None = None
    modified: Paths | None = None
    removed: Paths | None = None


_COMMITS = TypeAdapter(list[ChangedFiles])


def changed_paths(commits: list[Any] | None, path: str) -> tuple[str, ...] | None:
    """Union of ``added``/``modified``/``removed`` over ``commits``; ``None`` if none listed."""
    if not commits:
        return None
    try:
        files = _COMMITS.validate_python(commits)
    except ValidationError as exc:
        raise _first(exc, path) from None
    return tuple(sorted({name for commit in files
                         for name in (*(commit.added or ()), *(commit.modified or ()),
                                      *(commit.removed or ()))}))




def commit_at(value: str, path: str) -> str:
    """``value``, read from ``path``, as a commit id."""
    try:
        return check_commit(value)
    except PydanticCustomError as exc:
        raise malformed(f"'{path}'", exc.message()) from None
