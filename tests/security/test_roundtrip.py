"""Same visible text, inert values: real bash, dash and python3 run each placement.

For every template and every corpus value, the script with references must print what
the script with a harmless word pasted in (the old substitution, with a benign value)
prints, with the value in place of the word; and no payload may run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ansflow.spec.python_subst import python_text
from ansflow.spec.shell_subst import placements, shell_text
from tests.security.corpus import PAYLOADS

SHELL_TEMPLATES = [
    "printf '[%s]\\n' @",
    "printf '[%s]\\n' x@y",
    "printf '[%s]\\n' \"@\"",
    "printf '[%s]\\n' \"a @ b\"",
    "printf '[%s]\\n' '@'",
    "printf '[%s]\\n' 'a'@'b'",
    "printf '[%s]\\n' \"${UNSET_VAR:-@}\"",
    "printf '[%s]\\n' ${UNSET_VAR:-@}",
    "printf '[%s]\\n' \"$(printf '%s' \"@\")\"",
    "printf '[%s]\\n' \"`printf '%s' @`\"",
    "v=@; printf '[%s]\\n' \"$v\"",
    "cat <<EOF\n[@]\nEOF",
    "cat <<-EOF\n\t[@]\n\tEOF",
    "printf '[%s]\\n' \\@ \"\\@\"",
    "printf '[%s]\\n' ok # @",
]
BASH_ONLY = ["printf '[%s]\\n' $'a\\tb@'", "printf '[%s]\\n' $\"@\""]
PYTHON_TEMPLATES: list[tuple[str, str | None]] = [
    ("print('[' + @ + ']')", "print('[' + '@' + ']')"),
    ("print('[@]')", None),
    ('print("[@]")', None),
    ("print(f'[{1}@]')", None),
    ("print(\'\'\'[@]\'\'\')", None),
    ("print(r'[\\d@]')", None),
    ("print('{[@]}')", None),
    ("print('[' '@' ']')", None),
    ("print(len(@) == len('@'))", "print(len('@') == len('@'))"),
]
"""``(template, benign)``: ``benign`` pastes a word where code would need a string."""


def token(index: int) -> str:
    return f"QQ{index}TOKENQQ"


def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env={**os.environ, **env}, cwd=cwd, capture_output=True,
                          timeout=60, check=False)
    assert done.returncode == 0, (argv[-1][:300], done.stderr)
    return done.stdout.decode("utf-8", errors="surrogateescape")


def script_parts(template: str) -> list[str | None]:
    """The template once per corpus value, a line each; ``None`` for each expression."""
    parts: list[str | None] = []
    for _ in PAYLOADS:
        for index, piece in enumerate(template.split("@")):
            if index:
                parts.append(None)
            parts.append(piece)
        parts[-1] = f"{parts[-1]}\n"
    return parts


def values_for(parts: list[str | None]) -> list[int]:
    """Which corpus value each expression of ``script_parts`` stands for."""
    count = parts.count(None) // len(PAYLOADS)
    return [copy for copy in range(len(PAYLOADS)) for _ in range(count)]


def check(template: str, argv: list[str], build: str, cwd: Path,
          benign_template: str | None = None) -> None:
    parts = script_parts(template)
    owners = values_for(parts)
    benign = "".join(part if part is not None else token(owners.pop(0))
                     for part in script_parts(benign_template or template))
    expected = run([*argv, benign], {}, cwd)
    for index, value in enumerate(PAYLOADS):
        expected = expected.replace(token(index), value)
    names = [f"ANSFLOW_EXPR_{i}" for i in range(1, parts.count(None) + 1)]
    values = [PAYLOADS[owner] for owner in values_for(parts)]
    if build == "python":
        text = python_text(parts, names)
    else:
        text = shell_text(parts, names, placements(parts, bash=build == "bash"))
    assert run([*argv, text], dict(zip(names, values, strict=True)), cwd) == expected
    assert sorted(p.name for p in cwd.rglob("PWN*")) == []


@pytest.mark.parametrize("template", SHELL_TEMPLATES + BASH_ONLY)
def test_bash(template: str, tmp_path: Path) -> None:
    check(template, ["bash", "-eo", "pipefail", "-c"], "bash", tmp_path)


@pytest.mark.parametrize("template", SHELL_TEMPLATES)
def test_sh(template: str, tmp_path: Path) -> None:
    check(template, ["sh", "-e", "-c"], "sh", tmp_path)


@pytest.mark.parametrize(("template", "benign"), PYTHON_TEMPLATES)
def test_python(template: str, benign: str | None, tmp_path: Path) -> None:
    check(template, ["python3", "-c"], "python", tmp_path, benign)
