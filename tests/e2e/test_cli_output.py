"""What the terminal shows: failed steps' last lines, ``--logs`` prefixed by step,
attempts marked in a log, progress and summary agreeing, ``ansflow logs`` against a
server, ``--version`` and help without type placeholders."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx

from tests.api.served import env, serve_process, token
from tests.e2e.test_cli import ANSFLOW, ansflow, write

__all__ = ["env", "token"]  # fixtures used by name

FAILING = """
name: tails
steps:
  - {name: ok, type: custom, config: {script: "echo fine"}}
  - {name: noisy, type: custom, depends_on: [ok],
     config: {script: "for i in $(seq 1 30); do echo noise $i; done;
                       echo the real error >&2; exit 4"}}
"""
FLAKY = """
name: flaky
steps:
  - name: flaky
    type: custom
    retry: {max_attempts: 2, initial_delay: 0.1, jitter: false}
    config: {script: "if [ -e tried ]; then echo second try;
                      else touch tried; echo first try; exit 1; fi"}
  - {name: after, type: custom, depends_on: [flaky], config: {script: "sleep 0.3; echo after"}}
"""


def test_a_failed_steps_last_lines_follow_the_summary(tmp_path: Path) -> None:
    done = ansflow(tmp_path, "run", str(write(tmp_path, FAILING)))
    assert done.returncode == 1
    tail = done.stdout[done.stdout.index("--- last lines of noisy ---"):]
    assert "the real error" in tail and "noise 30" in tail
    assert "noise 5\n" not in tail  # only the tail, not the whole log
    assert "last lines of ok" not in done.stdout


def test_logs_option_prefixes_every_line_and_marks_attempts(tmp_path: Path) -> None:
    done = ansflow(tmp_path, "run", "--logs", str(write(tmp_path, FLAKY)))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert "flaky | first try" in lines
    assert "flaky | [ansflow] ---- attempt 2 ----" in lines
    assert lines.index("flaky | first try") < lines.index("flaky | [ansflow] ---- attempt 2 ----") \
        < lines.index("flaky | second try")
    assert "after | after" in lines


def test_progress_and_summary_show_the_same_durations(tmp_path: Path) -> None:
    done = ansflow(tmp_path, "run", str(write(tmp_path, FLAKY)))
    assert done.returncode == 0, done.stderr
    # progress goes to stderr (one line per change off a terminal), the table to stdout
    progress = dict(re.findall(r"^(\w+): success \((\d+\.\d\d)s\)$", done.stderr, re.M))
    table = dict(re.findall(r"^\s*(\w+)\s+success\s+(\d+\.\d\d)s", done.stdout, re.M))
    assert progress and progress == table, (done.stderr, done.stdout)


def test_validate_estimates_from_past_runs(tmp_path: Path) -> None:
    file = write(tmp_path, FLAKY)
    first = ansflow(tmp_path, "validate", str(file))
    assert "by step count" in first.stdout
    assert not (tmp_path / "a.db").exists(), "validate created a database"
    assert ansflow(tmp_path, "run", str(file)).returncode == 0
    again = ansflow(tmp_path, "validate", str(file))
    assert again.returncode == 0, again.stderr
    assert re.search(r"median durations of recent runs\): flaky -> after \(\d+\.\d\ds\)",
                     again.stdout), again.stdout


def test_version_and_help_without_placeholders(tmp_path: Path) -> None:
    version = ansflow(tmp_path, "--version")
    assert re.fullmatch(r"ansflow \d+\.\d+\.\d+\S*\n", version.stdout)
    for command in ([], ["run"], ["validate"], ["serve"], ["worker"], ["logs"], ["db"],
                    ["db", "upgrade"], ["token"], ["token", "create"], ["token", "list"],
                    ["token", "revoke"]):
        help_text = ansflow(tmp_path, *command, "--help").stdout
        assert help_text.startswith("Usage:"), command
        assert not re.search(r"<(str|int|bool|path|float|list\[\w+\])>", help_text), help_text


def test_logs_command_against_a_server(tmp_path: Path, env: dict[str, str],
                                       token: str) -> None:
    with serve_process(tmp_path, env) as (base, _), httpx.Client(
            base_url=f"{base}/api/v1", timeout=30,
            headers={"Authorization": f"Bearer {token}"}) as http:
        doc = {"name": "remote", "steps": [
            {"name": "one", "type": "custom", "config": {"script": "echo from one"}},
            {"name": "two", "type": "custom", "depends_on": ["one"],
             "config": {"script": "sleep 1; echo from two; echo done two"}}]}
        pipeline = http.post("/pipelines", json=doc).json()
        execution = http.post(f"/pipelines/{pipeline['id']}/executions").json()
        cli_env = {**env, "ANSFLOW_URL": base, "ANSFLOW_TOKEN": token}

        def logs(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([str(ANSFLOW), "logs", str(execution["id"]), *args],
                                  env=cli_env, capture_output=True, text=True, timeout=60)

        followed = logs("-f")  # started while `two` sleeps: it follows to the end
        assert followed.returncode == 0, followed.stderr
        assert "one | from one" in followed.stdout.splitlines()
        assert "two | done two" in followed.stdout.splitlines()
        whole = logs()
        assert whole.stdout.splitlines().count("two | from two") == 1
        single = logs("two")
        assert single.stdout.endswith("from two\ndone two\n")
        assert not any(line.startswith("two |") for line in single.stdout.splitlines())
        missing = logs("three")
        assert missing.returncode == 1 and "no step named 'three'" in missing.stderr
        no_token = subprocess.run([str(ANSFLOW), "logs", "1", "--url", base],
                                  env={k: v for k, v in env.items() if k != "ANSFLOW_TOKEN"},
                                  capture_output=True, text=True, timeout=60)
        assert no_token.returncode == 1 and "ANSFLOW_TOKEN" in no_token.stderr
