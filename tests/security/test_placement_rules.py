"""The rules of substitution that go beyond quoting, through the real engine: arithmetic
takes integers only, arguments and paths cannot be turned into options or steps out,
secrets travel in the environment, and the log keeps showing the script as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ansflow.resources import Resources
from tests.builders import pipeline_doc, step
from tests.engine.harness import run_doc
from tests.engine.test_secrets import all_log_text, store_secret

HOSTILE = "a[$(touch PWN_ARITH)]"


def manual(**variables: Any) -> dict[str, Any]:
    return {"event": "manual", "variables": variables}


async def test_arithmetic_takes_integers_and_refuses_anything_else(
        resources: Resources, tmp_path: Path) -> None:
    script = ('echo "sum=$(( ${{ vars.n }} + 1 ))"\n'
              "(( ${{ vars.n }} > 40 )) && echo big\n"
              'let "m = ${{ vars.n }} * 2"; echo "m=$m"\n'
              '[[ "${{ vars.n }}" -eq 41 ]] && echo equal\n'
              'declare -i k=${{ vars.n }}; echo "k=$k"\n'
              'echo "text ${{ vars.n }} is fine here"\n')
    fine = await run_doc(resources, pipeline_doc(step("calc", script)), manual(n="41"))
    log = await all_log_text(resources, fine.record.id)
    assert fine.status == "success", log
    for line in ("sum=42", "big", "m=82", "equal", "k=41", "text 41 is fine here"):
        assert f"\n{line}\n" in log, (line, log)

    for index, line in enumerate(script.splitlines()[:5]):
        refused = await run_doc(resources, pipeline_doc(step("calc", line)),
                                manual(n=HOSTILE))
        error = refused.step("calc").error or ""
        assert refused.status == "failed", (line, error)
        assert error.startswith("config.script: expression") and "arithmetic" in error, \
            (index, error)
        assert refused.step("calc").attempts[0].exit_code is None  # nothing ran
    text = await run_doc(resources, pipeline_doc(step("t", script.splitlines()[5])),
                         manual(n=HOSTILE))
    assert text.status == "success"
    assert list(tmp_path.rglob("PWN*")) == []


async def test_values_cannot_turn_arguments_into_options_or_paths_into_escapes(
        resources: Resources, tmp_path: Path) -> None:
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"name": "s", "type": "build", "config": {"tool": "make",
                                                   "args": ["${{ vars.x }}"]}},
         {"x": "--eval=$(shell touch PWN_MAKE)"},
         "config.args[0]: the value '--eval=$(shell touch PWN_MAKE)' starts with '-'"),
        ({"name": "s", "type": "fetch_code", "config": {"repo": str(tmp_path / "none"),
                                                        "ref": "${{ vars.x }}"}},
         {"x": "--upload-pack=touch PWN_GIT"}, "config.ref: the value '--upload-pack"),
        ({"name": "s", "type": "deploy", "config": {
            "target": "local", "environment": "e", "source": ".",
            "path": str(tmp_path / "root" / "${{ vars.x }}")}},
         {"x": "../../escaped"}, "steps out with '..'"),
        ({"name": "s", "type": "test", "config": {"framework": "pytest",
                                                  "args": ["x${{ vars.x }}"]}},
         {"x": "-k"}, ""),
    ]
    for doc, variables, message in cases:
        ran = await run_doc(resources, pipeline_doc(doc), manual(**variables))
        error = ran.step("s").error or ""
        if message:
            assert ran.status == "failed" and message in error, (doc, error)
        else:  # glued after other text, a leading '-' in the value is no option
            assert "starts with '-'" not in error, error
    assert list(tmp_path.rglob("PWN*")) == []
    assert not (tmp_path / "escaped").exists()


async def test_secrets_reach_scripts_through_the_environment_and_stay_masked(
        resources: Resources) -> None:
    secret = "s3cr3t-Value-93417"
    name = f"SUBST_{id(resources)}"
    await store_secret(resources, name, secret)
    script = (f'echo "token=${{{{ secrets.{name} }}}}"\n'
              'tr "\\0" " " < /proc/$$/cmdline > argv.txt\n'
              # the pattern is put together at run time: the script text never holds it
              f'echo "in argv: $(grep -c "$(printf %s {secret[:4]} {secret[4:]})" argv.txt '
              '|| true)"\n'
              f'test "${{{{ secrets.{name} }}}}" = "$(printf %s {secret[:4]} {secret[4:]})"\n')
    ran = await run_doc(resources, pipeline_doc(step("use", script)))
    log = await all_log_text(resources, ran.record.id)
    assert ran.status == "success", log
    assert "token=***" in log and "in argv: 0" in log
    assert secret not in log


async def test_the_log_shows_the_script_with_its_values(resources: Resources) -> None:
    ran = await run_doc(resources, pipeline_doc(
        step("show", "echo \"building ${{ trigger.branch }}\" 'at ${{ vars.x }}'"),
        step("py", "print('building', ${{ vars.x }})", config={"shell": "python"})),
        {"ref": "refs/heads/main", "variables": {"x": "it's 5"}})
    log = await all_log_text(resources, ran.record.id)
    assert ran.status == "success", log
    assert "echo \"building main\" 'at it's 5' show\nbuilding main at it's 5\n" in log
    assert "print('building', it's 5)\nbuilding it's 5\n" in log
    assert "ANSFLOW_EXPR" not in log
