"""Hostile values and a pipeline that puts each of them into every shell field of every
step type, in every placement, in one execution.

Every payload that would do something creates a file whose name starts with ``PWN``
in the step's working directory (or says so in Python); ``markers`` finds them. Every
placement prints ``<<TAG VALUE>>`` where the script text itself reads differently (the
log shows the script with the values pasted in), so finding ``<<TAG VALUE>>`` in the
log proves the value arrived as data, whole.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ansflow.triggers.inputs import ref_problem
from tests.builders import pipeline_doc

PAYLOADS: list[str] = [
    "$(touch PWN01)",
    "`touch PWN02`",
    "'; touch PWN03; '",
    '"; touch PWN04; "',
    "a;touch PWN05",
    "a|touch PWN06",
    "a&&touch PWN07",
    "a||touch PWN08",
    "a&touch PWN09&",
    "a\ntouch PWN10",
    "$(touch${IFS}PWN11)",
    ";touch${IFS}PWN12",
    "'$(touch PWN13)'",
    '"$(touch PWN14)"',
    "'\"$(touch PWN15)\"'",
    "\\'; touch PWN16; #",
    "${IFS}$(touch${IFS}PWN17)",
    "*",
    "~",
    "$HOME",
    "${HOME}",
    "~root/x",
    "%s%n%x%%",
    "trailing\\",
    "'",
    '"',
    "\\",
    "$((1+1))",
    "a[$(touch PWN29)]",
    "{a,b}",
    "!!",
    "x\rtouch PWN32",
    "tab\there",
    "\uff04(touch PWN34)",
    "\u2018; touch PWN35; \u2019",
    "\uff1btouch PWN36",
    "\u02cbtouch PWN37\u02cb",
    "$'\\x27'; touch PWN38",
    "EOF\ntouch PWN39\nEOF",
    "}}; touch PWN40; {{",
    "__import__('os').system('touch PWN41')",
    "'+__import__('os').system('touch PWN42')+'",
    "\"+__import__('os').system('touch PWN43')+\"",
    "'''\n__import__('os').system('touch PWN44')\n'''",
    "{__import__('os').system('touch PWN45')}",
    ">PWN46",
    "<PWN47 >PWN47b",
    "--upload-pack=touch PWN48",
    "-oProxyCommand=touch PWN49",
    "${{ vars.other }}",
    "",
    "\x1b[31mred\x1b[0m",
    "\u202etxt.exe",
    "caf\u00e9 \u6f22\u5b57 \U0001f680",
    "$(touch PWN55)\\",
    "`touch PWN56`'\"`",
    # without spaces, so that they are valid git ref names too
    "`touch${IFS}PWN60`",
    "';touch${IFS}PWN61;'",
    '";touch${IFS}PWN62;"',
    "a|touch${IFS}PWN63",
    "a&&touch${IFS}PWN64",
    "'$(touch${IFS}PWN65)'",
    '"$(touch${IFS}PWN66)"',
    "\uff04(touch${IFS}PWN67)",
    "\u2018;touch${IFS}PWN68;\u2019",
    "\uff1btouch${IFS}PWN69",
    "}};__import__('os').system('touch${IFS}PWN70');{{",
    "'+__import__('os').system('touch${IFS}PWN71')+'",
    "feat$(touch${IFS}PWN72;cp${IFS}/proc/$PPID/environ${IFS}PWN72loot)",
    "a[$(touch${IFS}PWN73)]x",
    "$'\\x27';touch${IFS}PWN74",
]

REF_SAFE: list[str] = [p for p in PAYLOADS
                       if p and ref_problem(f"refs/heads/{p}/x", full=True)
                       is None]
"""Payloads that are valid inside a git ref name (a fork's branch can be named so)."""


def ref_chunks(limit: int = 180) -> list[str]:
    """``REF_SAFE`` joined by ``/`` into branch names of at most ``limit`` characters."""
    chunks: list[list[str]] = [[]]
    for payload in REF_SAFE:
        if chunks[-1] and len("/".join([*chunks[-1], payload])) > limit:
            chunks.append([])
        chunks[-1].append(payload)
    return ["/".join(chunk) for chunk in chunks]


@dataclass(frozen=True)
class Source:
    """Where values come from: ``expr(i)`` is the expression of value ``i``."""

    tag: str
    template: str
    count: int

    def expr(self, index: int) -> str:
        return "${{ " + self.template.format(i=index) + " }}"

    def items(self) -> Iterable[tuple[str, str]]:
        for index in range(self.count):
            yield f"{self.tag}{index}", self.expr(index)


def variables_source() -> Source:
    return Source("v", "vars.p{i}", len(PAYLOADS))


def outputs_source() -> Source:
    return Source("o", "steps.src.outputs.p{i}", len(PAYLOADS))


def trigger_source(field: str) -> Source:
    return Source(field[0], "trigger." + field, 1)


def variables() -> dict[str, str]:
    return {f"p{index}": payload for index, payload in enumerate(PAYLOADS)}


SHELL_PLACEMENTS = {
    "dq": "printf '<<%s>>\\n' \"{tag}:dq{x}\"",
    "sq": "printf '<<%s>>\\n' '{tag}:sq{x}'",
    "bare": "printf '<<{tag}:bare%s>>\\n' {x}",
    "glued": "printf '<<%s>>\\n' {tag}:glued{x}=end",
}
BASH_PLACEMENTS = {"ansi": "printf '<<%s>>\\n' $'{tag}:ansi{x}'"}
PYTHON_PLACEMENTS = {
    "bare": "print('<<{tag}' ':bare' + {x} + '>>')",
    "sq": "print('<<{tag}' ':sq{x}>>')",
    "dq": 'print("<<{tag}" ":dq{x}>>")',
    "tq": "print('''<<{tag}''' ''':tq{x}>>''')",
    "f": "print(f'<<{tag}' f':f{{1}}{x}>>')",
}
"""What each placement prints: ``<<TAG:PLACEMENT`` then the value, then ``>>``
(``glued`` adds ``=end`` and ``f`` a ``1`` before the value)."""


def expected(tag: str, place: str, value: str) -> str:
    if place == "glued":
        return f"<<{tag}:glued{value}=end>>"
    if place == "f":
        return f"<<{tag}:f1{value}>>"
    return f"<<{tag}:{place}{value}>>"


def shell_script(sources: list[Source], *, bash: bool) -> str:
    forms = {**SHELL_PLACEMENTS, **(BASH_PLACEMENTS if bash else {})}
    lines = [form.format(tag=tag, x=x) for source in sources for tag, x in source.items()
             for form in forms.values()]
    # one heredoc with an unquoted delimiter holds every value (double-quote-like)
    lines.append("cat <<EOF | sed 's/^hd/<<hd/'")
    lines += [f"hd{tag}:{x}>>" for source in sources for tag, x in source.items()]
    lines.append("EOF")
    return "\n".join(lines) + "\n"


def python_script(sources: list[Source]) -> str:
    return "\n".join(form.format(tag=tag, x=x) for source in sources
                     for tag, x in source.items() for form in PYTHON_PLACEMENTS.values())


def shell_placements(bash: bool) -> list[str]:
    return [*SHELL_PLACEMENTS, *(BASH_PLACEMENTS if bash else {}), "hd"]


def python_placements() -> list[str]:
    return list(PYTHON_PLACEMENTS)


def expected_lines(sources: list[Source], values: dict[str, str], placements: list[str]
                   ) -> dict[str, str]:
    """``<<...>>`` text -> what it is about, for every value and placement."""
    found = {}
    for source in sources:
        for tag, _ in source.items():
            for place in placements:
                text = (f"<<hd{tag}:{values[tag]}>>" if place == "hd"
                        else expected(tag, place, values[tag]))
                found[text] = f"{tag} placed {place}"
    return found


SARIF = '{"version": "2.1.0", "runs": []}'


def injection_steps(sources: list[Source], stub_bin: Path) -> list[dict[str, Any]]:
    """One step per shell field of every step type, each placing every value."""
    bash, sh = shell_script(sources, bash=True), shell_script(sources, bash=False)
    after = ["src"] if any(s.tag == "o" for s in sources) else []

    def step(name: str, type_: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"name": name, "type": type_, "config": config, "depends_on": after, **extra}

    return [
        step("custom-bash", "custom", {"script": bash}),
        step("custom-sh", "custom", {"script": sh, "shell": "sh"}),
        step("custom-python", "custom", {"script": python_script(sources),
                                         "shell": "python"}),
        step("build-command", "build", {"tool": "shell", "command": bash}),
        step("test-command", "test", {"command": bash}),
        step("scan-command", "security_scan", {"fail_on": "none", "scanners": [
            {"name": "probe", "command": f"{bash}echo '{SARIF}' > probe.sarif",
             "sarif": "probe.sarif"}]}),
        step("deploy-script", "deploy", {"target": "script", "environment": "ci",
                                         "script": bash}),
        step("deploy-ssh", "deploy", {"target": "ssh", "environment": "ci",
                                      "host": "web.example.invalid",
                                      "remote_path": "/srv/app", "command": bash},
             env={"PATH": f"{stub_bin}:/usr/local/bin:/usr/bin:/bin"}),
    ]


STEP_PLACEMENTS = {
    "custom-bash": shell_placements(True), "custom-sh": shell_placements(False),
    "custom-python": python_placements(), "build-command": shell_placements(True),
    "test-command": shell_placements(True), "scan-command": shell_placements(True),
    "deploy-script": shell_placements(True), "deploy-ssh": shell_placements(True),
}


def outputs_step() -> dict[str, Any]:
    """Publishes every payload as an output, in the multi-line ``key<<MARK`` format."""
    blob = base64.b64encode(json.dumps(PAYLOADS).encode()).decode()
    script = (
        "import base64, json, os\n"
        f"values = json.loads(base64.b64decode('{blob}'))\n"
        "with open(os.environ['ANSFLOW_OUTPUT'], 'w', encoding='utf-8') as out:\n"
        "    for i, v in enumerate(values):\n"
        "        out.write(f'p{i}<<ANSFLOW_CORPUS_END\\n{v}\\nANSFLOW_CORPUS_END\\n')\n")
    return {"name": "src", "type": "custom", "config": {"script": script, "shell": "python"}}


def stub_bin(root: Path) -> Path:
    """``ssh`` that runs its last argument with bash, as the remote login shell would,
    and an ``rsync`` that uploads nothing: the remote host of the ssh target."""
    directory = root / "stub-bin"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ssh").write_text('#!/bin/bash\nexec bash -c "${@: -1}"\n')
    (directory / "rsync").write_text("#!/bin/sh\nexit 0\n")
    for name in ("ssh", "rsync"):
        (directory / name).chmod(0o755)
    return directory


def injection_doc(sources: list[Source], root: Path, **fields: Any) -> dict[str, Any]:
    steps = injection_steps(sources, stub_bin(root))
    if any(s.tag == "o" for s in sources):
        steps.insert(0, outputs_step())
    return pipeline_doc(*steps, max_parallel=8, **fields)


def markers(*roots: Path) -> list[Path]:
    """Every file a payload managed to create."""
    return sorted(path for root in roots if root.exists() for path in root.rglob("PWN*"))
