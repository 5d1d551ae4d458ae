"""What an expression becomes in a Python script (pure)."""

from __future__ import annotations

import pytest

from ansflow.spec.python_subst import python_text
from ansflow.spec.shell_subst import UnsafePlacement

READ = '__import__("os").environ["V1"]'
READ_SQ = "__import__('os').environ['V1']"


def rewritten(template: str) -> str:
    pieces = template.split("@")
    parts: list[str | None] = []
    for index, piece in enumerate(pieces):
        if index:
            parts.append(None)
        parts.append(piece)
    return python_text(parts, [f"V{i}" for i in range(1, len(pieces))])


@pytest.mark.parametrize(("template", "text"), [
    ("print(@)", f"print(({READ}))"),
    ("n = int(@) + 1", f"n = int(({READ})) + 1"),
    ("print('built @')", f"print(f'built {{{READ}}}')"),
    ('print("built @")', f'print(f"built {{{READ_SQ}}}")'),
    ("print('{x} @ }')", f"print(f'{{{{x}}}} {{{READ}}} }}}}')"),
    ("print(f'{n} @ {{}}')", f"print(f'{{n}} {{{READ}}} {{{{}}}}')"),
    ("print(f'{@!r}')", f"print(f'{{({READ})!r}}')"),
    ("print(r'\\d@')", f"print(rf'\\d{{{READ}}}')"),
    ("print(R'@')", f"print(Rf'{{{READ}}}')"),
    ("print(u'@')", f"print(f'{{{READ}}}')"),
    ("print('''a\n@''')", f"print(f'''a\n{{{READ}}}''')"),
    ('print("""@""")', f'print(f"""{{{READ_SQ}}}""")'),
    ("print('\\N{BULLET} @')", f"print(f'\\N{{BULLET}} {{{READ}}}')"),
    ("print('\\@')", f"print(f'\\\\{{{READ}}}')"),
    ("print('a' 'b@')", f"print('a' f'b{{{READ}}}')"),
    ("# about @\nprint(1)", "# about V1\nprint(1)"),
    ("print('#@')", f"print(f'#{{{READ}}}')"),
    ("x = b'raw'  # @", "x = b'raw'  # V1"),
    ("print('it\\'s @')", f"print(f'it\\'s {{{READ}}}')"),
])
def test_each_placement_reads_the_environment(template: str, text: str) -> None:
    assert rewritten(template) == text


@pytest.mark.parametrize(("template", "problem"), [
    ("print(b'@')", "bytes literal"),
    ("print(rb'@')", "bytes literal"),
    ("print(f\"{'@'}\")", "inside an f-string"),
])
def test_placements_without_a_safe_form_are_refused(template: str, problem: str) -> None:
    with pytest.raises(UnsafePlacement, match=problem):
        rewritten(template)


def test_strings_without_expressions_stay_as_written() -> None:
    script = "print('{a}', b'x', r'\\d', f'{1}')\nprint(@)"
    assert rewritten(script).startswith("print('{a}', b'x', r'\\d', f'{1}')\n")
