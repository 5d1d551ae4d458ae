"""Where each ``${{ }}`` of a shell script stands, and the shell text that refers to it.

A script field never gets a value pasted into its text (PRODUCT.md section 8). Each
``${{ expr }}`` becomes a reference to a variable ``V`` of the step's environment,
written so that the value is one word with the same text wherever the expression
stands:

=====================  ==============  ================================================
the expression is      it becomes      e.g. ``echo v=${{ x }}`` ...
=====================  ==============  ================================================
bare (glued or not)    ``"$V"``        ``echo v="$V"``
in ``"..."``           ``${V}``        ``echo "v=${V}"``
in ``'...'``           ``'"$V"'``      ``echo 'v='"$V"''`` (close, insert, reopen)
in ``$'...'`` (bash)   ``'"$V"$'``
in a heredoc body      ``${V}``        unquoted delimiter; a quoted one is refused
in arithmetic          ``${V}``        and the value must be an integer
in a comment           ``${V}``
=====================  ==============  ================================================

A backslash right before an expression stays a literal backslash inside quotes and is
dropped outside them; a ``$`` right before one stays a literal ``$``.

Arithmetic (``$(( ))``, ``(( ))``, ``$[ ]``, array subscripts, ``${x:offset}``,
``let``, ``declare -i`` and the operands of ``[[ ... -eq ... ]]``) reads a variable's
text as an expression again, and ``a[$(cmd)]`` there runs ``cmd``: values placed there
must be integers, which ``Placement.integer`` says.

Why a wrong guess cannot run a value: the value only travels in a variable, so a
misjudged placement splits the value into words or shows a literal ``$V``, never runs
it. The one refusal is a heredoc with a quoted delimiter, whose body stays literal text.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from ansflow.spec.shell_scan import SENTINEL, Placement, Quoting, UnsafePlacement, scan

__all__ = ["FORMS", "SENTINEL", "Placement", "Quoting", "UnsafePlacement", "placements",
           "shell_text"]

FORMS: dict[Quoting, str] = {
    Quoting.BARE: '"${name}"', Quoting.DOUBLE: "${{{name}}}", Quoting.SINGLE: "'\"${name}\"'",
    Quoting.ANSI: "'\"${name}\"$'", Quoting.HEREDOC: "${{{name}}}",
    Quoting.ARITHMETIC: "${{{name}}}", Quoting.COMMENT: "${{{name}}}",
}


def placements(parts: Sequence[str | None], *, bash: bool = True) -> list[Placement]:
    """Where each expression (``None`` in ``parts``, between literal texts) stands."""
    if any(part is not None and SENTINEL in part for part in parts):
        raise UnsafePlacement("the script contains a NUL character")
    text = "".join(SENTINEL if part is None else part for part in parts)
    return scan(text, bash=bash)


def shell_text(parts: Sequence[str | None], names: Sequence[str],
               where: Sequence[Placement]) -> str:
    """The script with expression ``i`` replaced by a reference to variable ``names[i]``."""
    out: list[str] = []
    index = 0
    for part in parts:
        if part is not None:
            out.append(part)
            continue
        place = where[index]
        if place.after_dollar:
            out[-1] = out[-1][:-1] + "\\$"
        elif place.after_backslash:
            out[-1] = out[-1][:-1] if place.quoting is Quoting.BARE else out[-1] + "\\"
        out.append(FORMS[place.quoting].format(name=names[index]))
        index += 1
    return "".join(out)
