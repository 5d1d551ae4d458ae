"""Where an expression stands in a shell script, and what it becomes there (pure)."""

from __future__ import annotations

import pytest

from ansflow.spec.shell_subst import Placement, Quoting, UnsafePlacement, placements, shell_text

X = None  # an expression


def parts(template: str) -> list[str | None]:
    """``@`` stands for an expression."""
    out: list[str | None] = []
    for index, piece in enumerate(template.split("@")):
        if index:
            out.append(X)
        out.append(piece)
    return out


def placed(template: str, *, bash: bool = True) -> tuple[str, list[Placement]]:
    found = placements(parts(template), bash=bash)
    names = [f"V{i}" for i in range(1, len(found) + 1)]
    return shell_text(parts(template), names, found), found


B, D, S, A, H, N, C = (Quoting.BARE, Quoting.DOUBLE, Quoting.SINGLE, Quoting.ANSI,
                       Quoting.HEREDOC, Quoting.ARITHMETIC, Quoting.COMMENT)


@pytest.mark.parametrize(("template", "text", "quoting"), [
    ("echo @", 'echo "$V1"', [B]),
    ("echo pre@post", 'echo pre"$V1"post', [B]),
    ('echo "building @"', 'echo "building ${V1}"', [D]),
    ("echo 'compiled @'", "echo 'compiled '\"$V1\"''", [S]),
    ("echo $'a\\tb @'", "echo $'a\\tb '\"$V1\"$''", [A]),
    ('echo $"@"', 'echo $"${V1}"', [D]),
    ("cat <<EOF\nv=@\nEOF\necho @", 'cat <<EOF\nv=${V1}\nEOF\necho "$V2"', [H, B]),
    ("cat <<-EOF\n\tv=@\n\tEOF\necho @", 'cat <<-EOF\n\tv=${V1}\n\tEOF\necho "$V2"', [H, B]),
    ("cat <<< @", 'cat <<< "$V1"', [B]),
    ('echo $(echo "@" @)', 'echo $(echo "${V1}" "$V2")', [D, B]),
    ('echo "$(echo @ "@")"', 'echo "$(echo "$V1" "${V2}")"', [B, D]),
    ("echo `echo @`", 'echo `echo "$V1"`', [B]),
    ('echo "`echo @`"', 'echo "`echo "$V1"`"', [B]),
    ("echo ${X:-@}", 'echo ${X:-"$V1"}', [B]),
    ('echo "${X:-@}"', 'echo "${X:-${V1}}"', [D]),
    ("echo ${X#@}", 'echo ${X#"$V1"}', [B]),
    ("# note @\necho @", '# note ${V1}\necho "$V2"', [C, B]),
    ("echo a#@", 'echo a#"$V1"', [B]),
    ("x=@ y=\"@\"", 'x="$V1" y="${V2}"', [B, D]),
    ("echo \\@", 'echo "$V1"', [B]),
    ('echo "\\@"', 'echo "\\\\${V1}"', [D]),
    ("echo \\\\@", 'echo \\\\"$V1"', [B]),
    ("echo $@", 'echo \\$"$V1"', [B]),
    ('echo "$@"', 'echo "\\$${V1}"', [D]),
    ("echo '$@'", "echo '$'\"$V1\"''", [S]),
    ("case @ in a) echo 'x@';; esac", "case \"$V1\" in a) echo 'x'\"$V2\"'';; esac", [B, S]),
])
def test_each_placement_becomes_a_quoted_reference(template: str, text: str,
                                                   quoting: list[Quoting]) -> None:
    got, found = placed(template)
    assert [p.quoting for p in found] == quoting
    assert not any(p.integer for p in found)
    assert got == text


@pytest.mark.parametrize("template", [
    "echo $(( @ + 1 ))", "(( @ > 3 ))", "echo $[ @ ]", "echo ${a[@]}", "echo ${s:@:2}",
    "x=1; (( x += @ ))", "let x=@", 'let "x = @"', "let 'x=@'", "declare -i n=@",
    "local -ri n=\"@\"", "[[ @ -eq 3 ]]", '[[ 3 -lt "@" ]]',
    "if [[ $a == b && @ -ge 1 ]]; then :; fi",
    "for (( i = 0; i < @; i++ )); do :; done", 'echo "$(( @ ))"',
])
def test_arithmetic_placements_ask_for_an_integer(template: str) -> None:
    _, found = placed(template)
    assert [p.integer for p in found] == [True]


@pytest.mark.parametrize("template", [
    "[[ @ == main ]]", "[[ -n @ ]]", "echo let @", "declare x=@", "let x=1; echo @",
    "[[ $x -eq 1 ]] && echo @", "echo ${x:-@}", "[ @ -eq 1 ]",
])
def test_text_next_to_arithmetic_is_still_text(template: str) -> None:
    _, found = placed(template)
    assert [p.integer for p in found] == [False]


def test_posix_sh_has_no_ansi_c_quotes() -> None:
    text, found = placed("echo $'a @'", bash=False)
    assert [p.quoting for p in found] == [S]
    assert text == "echo $'a '\"$V1\"''"


@pytest.mark.parametrize(("template", "problem"), [
    ("cat <<'EOF'\n@\nEOF", "quoted delimiter ('EOF')"),
    ('cat <<"END"\nx @\nEND', "quoted delimiter ('END')"),
    ("cat <<\\EOF\n@\nEOF", "quoted delimiter ('EOF')"),
    ("cat <<E'O'F\n@\nEOF", "quoted delimiter ('EOF')"),
    ("cat <<@\nx\n", "heredoc delimiter"),
    ("echo a\x00b @", "NUL"),
])
def test_placements_that_cannot_be_made_safe_are_refused(template: str, problem: str) -> None:
    with pytest.raises(UnsafePlacement, match=problem.replace("(", r"\(").replace(")", r"\)")):
        placements(parts(template))


def test_text_after_a_quoted_heredoc_is_read_again() -> None:
    text, found = placed("cat <<'EOF'\nliteral $x\nEOF\necho \"@\"")
    assert [p.quoting for p in found] == [D]
    assert text.endswith('echo "${V1}"')


def test_a_value_line_equal_to_the_delimiter_cannot_end_the_heredoc() -> None:
    _, found = placed("cat <<EOF\n@\nEOF\necho @")
    assert [p.quoting for p in found] == [H, B]
